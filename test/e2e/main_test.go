package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// tollgateBin is the binary TestMain builds; every test runs this one.
var tollgateBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tollgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tollgateBin = filepath.Join(dir, "tollgate")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The package path works from any directory inside the module.
	build := exec.CommandContext(ctx, "go", "build", "-tags", "vtprotobuf", "-o", tollgateBin,
		"github.com/tollgate-dev/tollgate/cmd/tollgate")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build -tags vtprotobuf ./cmd/tollgate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Bounds of the process lifecycle.
const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 7 * time.Second // > shutdown_timeout, which is 5s
	callTimeout  = 5 * time.Second
)

// syncBuffer collects a process's output; exec writes from its own goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tollgate is one running `tollgate serve` process and a gRPC client to it.
type tollgate struct {
	grpcAddr string
	httpAddr string
	cfgPath  string
	stderr   *syncBuffer
	client   authv3.AuthorizationClient

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startTollgate writes a config made of a server section on free loopback
// ports followed by body, starts `tollgate serve --config` on it, and waits
// until /readyz answers 200. t.Cleanup stops it with SIGTERM and fails the
// test unless it exits 0 within stopTimeout.
func startTollgate(t *testing.T, body string) *tollgate {
	t.Helper()
	dir := t.TempDir()
	// A port found free can be taken by someone else before tollgate
	// binds it; a bind failure is retried on fresh ports.
	const attempts = 3
	for i := 1; ; i++ {
		tg, err := tryStart(t, dir, body)
		if err == nil {
			return tg
		}
		if !errors.Is(err, errAddrInUse) || i == attempts {
			t.Fatalf("start tollgate: %v", err)
		}
		t.Logf("start tollgate (attempt %d): %v; retrying on other ports", i, err)
	}
}

var errAddrInUse = errors.New("address already in use")

func tryStart(t *testing.T, dir, body string) (*tollgate, error) {
	t.Helper()
	ports := freePorts(t, 2)
	tg := &tollgate{
		grpcAddr: ports[0],
		httpAddr: ports[1],
		cfgPath:  filepath.Join(dir, "tollgate.yaml"),
		stderr:   &syncBuffer{},
		done:     make(chan struct{}),
	}
	cfg := fmt.Sprintf(`server:
  grpc_address: %q
  http_address: %q
  startup_timeout: "10s"
  shutdown_timeout: "5s"
`, tg.grpcAddr, tg.httpAddr) + body
	if err := os.WriteFile(tg.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	if err := tg.spawn(t, nil, cfg); err != nil {
		return nil, err
	}
	t.Cleanup(func() { tg.stop(t) })

	conn, err := grpc.NewClient(tg.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s) = %v", tg.grpcAddr, err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // runs before stop
	tg.client = authv3.NewAuthorizationClient(conn)
	return tg, nil
}

// waitReady polls GET /readyz until it answers 200 with ready: true.
func (tg *tollgate) waitReady(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	var last string
	for {
		select {
		case <-tg.done:
			return fmt.Errorf("tollgate exited early (%v)", tg.cmd.ProcessState)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+tg.httpAddr+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if resp.StatusCode == http.StatusOK {
				var body struct {
					Ready bool `json:"ready"`
				}
				if err := json.Unmarshal(b, &body); err != nil || !body.Ready {
					return fmt.Errorf("GET /readyz = %s; want 200 with {\"ready\":true,...}", last)
				}
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET /readyz not 200 within %v; last answer: %s", readyTimeout, last)
		case <-tg.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) in time.
func (tg *tollgate) stop(t *testing.T) {
	t.Helper()
	select {
	case <-tg.done:
		t.Errorf("tollgate exited before the test ended (%v); stderr:\n%s", tg.cmd.ProcessState, tg.stderr.String())
		return
	default:
	}
	if err := tg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM tollgate: %v", err)
	}
	select {
	case <-tg.done:
	case <-time.After(stopTimeout):
		_ = tg.cmd.Process.Kill()
		<-tg.done
		t.Errorf("tollgate did not exit within %v of SIGTERM; stderr:\n%s", stopTimeout, tg.stderr.String())
		return
	}
	if code := tg.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("tollgate exit status after SIGTERM = %d; want 0; stderr:\n%s", code, tg.stderr.String())
	}
	if t.Failed() {
		t.Logf("tollgate stderr:\n%s", tg.stderr.String())
	}
}

// check sends one CheckRequest.
func (tg *tollgate) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	resp, err := tg.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check(%s) error = %v; want a CheckResponse", req.GetAttributes().GetRequest().GetHttp().GetId(), err)
	}
	return resp
}

// get fetches a path of the HTTP listener and returns status and body.
func (tg *tollgate) get(t *testing.T, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+tg.httpAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// freePorts returns n distinct loopback addresses that were free a moment
// ago: all n listeners are open at once, so no address repeats.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	lns := make([]net.Listener, n)
	for i := range lns {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		lns[i], addrs[i] = l, l.Addr().String()
	}
	for _, l := range lns {
		l.Close()
	}
	return addrs
}

// runCLI runs the tollgate binary with args and returns its exit status,
// stdout and stderr.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, tollgateBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
	default:
		t.Fatalf("tollgate %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// spawn starts `tollgate serve` on tg.cfgPath (holding cfg) with extra
// environment variables and waits until it is ready. A failure to become
// ready kills the process and returns an error wrapping errAddrInUse when
// a port was taken meanwhile, so callers can retry on fresh ports.
func (tg *tollgate) spawn(t *testing.T, env []string, cfg string) error {
	t.Helper()
	tg.cmd = exec.Command(tollgateBin, "serve", "--config", tg.cfgPath)
	if len(env) > 0 {
		tg.cmd.Env = append(os.Environ(), env...)
	}
	tg.cmd.Stdout = io.Discard
	tg.cmd.Stderr = tg.stderr
	setDeathSignal(tg.cmd)
	if err := tg.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", tollgateBin, err)
	}
	go func() {
		_ = tg.cmd.Wait()
		close(tg.done)
	}()
	if err := tg.waitReady(t); err != nil {
		select {
		case <-tg.done:
		default:
			_ = tg.cmd.Process.Kill()
			<-tg.done
		}
		if strings.Contains(tg.stderr.String(), "address already in use") {
			return fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return fmt.Errorf("%v\nconfig:\n%s\nstderr:\n%s", err, cfg, tg.stderr.String())
	}
	return nil
}
