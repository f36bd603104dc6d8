package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/test/load/internal/loopback"
)

const (
	// stopGrace is how long a server gets to exit after SIGTERM before it
	// is killed.
	stopGrace = 5 * time.Second
	// exitNoVT mirrors nullauthz: "-codec vt" in a binary built without
	// -tags vtprotobuf.
	exitNoVT = 2
)

// errNoVT means the vt-codec floor cannot run in this build; the
// orchestrator skips that row instead of failing the whole benchmark.
var errNoVT = errors.New("nullauthz was built without -tags vtprotobuf; -codec vt unavailable")

// proc is a server subprocess this tool started and therefore may stop.
type proc struct {
	Name    string
	LogPath string
	PID     int

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when Wait returns
	waitErr error
}

// startProc starts bin with its stdout and stderr appended to logPath. If
// stdout is non-nil it receives the child's stdout as well. The child gets
// SIGTERM if this process dies without cleaning up (Pdeathsig), so an
// interrupted benchmark does not leave servers running.
func startProc(name, bin string, args []string, logPath string, stdout io.Writer) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = lf
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(lf, stdout)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	// Bound Wait even if the child leaves a grandchild holding the pipe.
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{Name: name, LogPath: logPath, PID: cmd.Process.Pid, cmd: cmd, logFile: lf, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = lf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to stopGrace, then kills. It is safe to call
// more than once and on an already exited process.
func (p *proc) stop() error {
	if done, _ := p.exited(); done {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v; killed", p.Name, p.PID, stopGrace)
	case <-time.After(stopGrace):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.PID)
	}
}

// logTail returns the last few KiB of the process log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	const keep = 4 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// exitError describes an unexpected exit with the log tail attached.
func (p *proc) exitError(err error) error {
	return fmt.Errorf("%s (pid %d) exited: %v; log %s:\n%s", p.Name, p.PID, err, p.LogPath, p.logTail())
}

// firstLine captures the first line written to it and hands it over once.
type firstLine struct {
	mu   sync.Mutex
	buf  []byte
	sent bool
	ch   chan string
}

func newFirstLine() *firstLine { return &firstLine{ch: make(chan string, 1)} }

func (f *firstLine) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.ch <- string(f.buf[:i])
		f.sent, f.buf = true, nil
	} else if len(f.buf) > 4<<10 {
		f.sent, f.buf = true, nil // not the line we expect; give up quietly
	}
	return len(p), nil
}

// server is a started ext_authz server and where to reach it.
type server struct {
	*proc
	GRPCAddr  string
	HTTPAddr  string
	AdminAddr string // session admin API; "" when off
}

// MetricsURL is the server's Prometheus endpoint.
func (s *server) MetricsURL() string { return "http://" + s.HTTPAddr + "/metrics" }

// target builds the load target for s.
func (s *server) target() *target {
	return &target{Name: s.Name, Addr: s.GRPCAddr, MetricsURL: s.MetricsURL(), PID: s.PID}
}

// startNull starts nullauthz with the given codec on loopback port 0, reads
// the "grpc=ADDR http=ADDR" line and waits for /readyz.
func startNull(ctx context.Context, hc *http.Client, bin, codec, logPath string, readyTimeout time.Duration) (*server, error) {
	name := "null-" + codec
	fl := newFirstLine()
	p, err := startProc(name, bin, []string{"-codec", codec, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"}, logPath, fl)
	if err != nil {
		return nil, err
	}
	s := &server{proc: p}
	ok := false
	defer func() {
		if !ok {
			_ = p.stop()
		}
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var line string
	select {
	case line = <-fl.ch:
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.waitErr, &ee) && ee.ExitCode() == exitNoVT {
			return nil, errNoVT
		}
		return nil, p.exitError(p.waitErr)
	case <-timer.C:
		return nil, fmt.Errorf("%s: no address line within %v; log %s:\n%s", name, readyTimeout, logPath, p.logTail())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.GRPCAddr, s.HTTPAddr, err = parseAddrLine(line); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := waitReady(ctx, hc, p, "http://"+s.HTTPAddr+"/readyz", readyTimeout); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// parseAddrLine parses nullauthz's "grpc=ADDR http=ADDR" and insists both
// addresses are loopback.
func parseAddrLine(line string) (grpcAddr, httpAddr string, err error) {
	for f := range strings.FieldsSeq(line) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "grpc":
			grpcAddr = v
		case "http":
			httpAddr = v
		}
	}
	if grpcAddr == "" || httpAddr == "" {
		return "", "", fmt.Errorf("address line %q: want \"grpc=ADDR http=ADDR\"", line)
	}
	for _, a := range []string{grpcAddr, httpAddr} {
		if err := loopback.CheckHostPort(a); err != nil {
			return "", "", err
		}
	}
	return grpcAddr, httpAddr, nil
}

// startTollgate starts "bin serve --config cfgPath" as the row name and
// waits for /readyz on httpAddr.
func startTollgate(ctx context.Context, hc *http.Client, name, bin, cfgPath, grpcAddr, httpAddr, logPath string, readyTimeout time.Duration) (*server, error) {
	p, err := startProc(name, bin, []string{"serve", "--config", cfgPath}, logPath, nil)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, hc, p, "http://"+httpAddr+"/readyz", readyTimeout); err != nil {
		_ = p.stop()
		return nil, err
	}
	return &server{proc: p, GRPCAddr: grpcAddr, HTTPAddr: httpAddr}, nil
}

// waitReady polls url until it answers 200, the process exits, or timeout.
func waitReady(ctx context.Context, hc *http.Client, p *proc, url string, timeout time.Duration) error {
	if err := loopback.CheckURL(url); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if done, err := p.exited(); done {
			return p.exitError(err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v (last: %v); log %s:\n%s", p.Name, timeout, last, p.LogPath, p.logTail())
		case <-tick.C:
		}
	}
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1 and releases
// it. Another process could take the port before the server binds it; on
// loopback in a benchmark that race is rare and shows up as a start error.
func freeLoopbackAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", err
	}
	return addr, nil
}
