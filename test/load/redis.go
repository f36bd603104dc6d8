package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/test/load/internal/loopback"
)

// defaultRedisServer is where Debian's redis-server package installs the
// server (`make deps` installs it when missing).
const defaultRedisServer = "/usr/bin/redis-server"

// redisServer is a redis-server this tool started for the session rows:
// loopback only, no persistence, its data in the work dir.
type redisServer struct {
	*proc
	Addr string
}

// startRedis starts bin on a free loopback port with dir as its working
// directory and waits until it answers PING. A missing binary is an error:
// the session rows measure a real Redis or nothing.
func startRedis(ctx context.Context, bin, dir, logPath string, readyTimeout time.Duration) (*redisServer, error) {
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return nil, fmt.Errorf("redis-server not found at %s (the session rows need it; `make deps` or apt-get install redis-server): %v", bin, err)
	}
	addr, err := freeLoopbackAddr(ctx)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	args := []string{
		"--port", port, "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir,
		// Every session key has a TTL; an evicting policy could drop a
		// subject index (see the session package doc).
		"--maxmemory-policy", "noeviction",
		"--loglevel", "warning",
	}
	p, err := startProc("redis", bin, args, logPath, nil)
	if err != nil {
		return nil, err
	}
	r := &redisServer{proc: p, Addr: addr}
	probe := &redisProbe{Addr: addr}
	defer probe.close()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		if done, err := p.exited(); done {
			return nil, p.exitError(err)
		}
		reply, err := probe.do(ctx, "PING")
		if err == nil && reply == "PONG" {
			return r, nil
		}
		probe.close() // redial on the next attempt
		select {
		case <-ctx.Done():
			_ = p.stop()
			return nil, fmt.Errorf("redis-server on %s: no PONG within %v (last: %q, %v); log %s:\n%s", addr, readyTimeout, reply, err, logPath, p.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// redisProbe reads a Redis server's command counters over its own single
// connection, speaking just enough RESP to do so. Using no client library
// means every command it sends is one this file wrote, so the benchmark
// knows exactly how many of the counted commands were its own.
type redisProbe struct {
	Addr string
	PID  int // redis-server's PID, for its CPU; 0 disables

	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
}

// redisSnapshot is one reading of the server's counters.
type redisSnapshot struct {
	Calls map[string]uint64 // INFO commandstats: calls by command
	CPU   time.Duration     // utime+stime of redis-server
	// HaveCPU is false when the PID is unknown.
	HaveCPU bool
}

// ownCallsBetween is how many commands a pair of snapshots adds to the
// counters between them: the first snapshot's INFO is counted once it has
// run, so it shows in the second; the second's is not yet in its own
// output.
const ownCallsBetween = 1

// snapshot sends one INFO commandstats and reads redis-server's CPU.
func (p *redisProbe) snapshot(ctx context.Context) (redisSnapshot, error) {
	var s redisSnapshot
	info, err := p.do(ctx, "INFO", "commandstats")
	if err != nil {
		return s, fmt.Errorf("redis %s: INFO commandstats: %w", p.Addr, err)
	}
	if s.Calls, err = parseCommandStats(info); err != nil {
		return s, fmt.Errorf("redis %s: %w", p.Addr, err)
	}
	if p.PID > 0 {
		if s.CPU, err = procCPU(p.PID); err != nil {
			return s, err
		}
		s.HaveCPU = true
	}
	return s, nil
}

// redisDelta is what happened in Redis between two snapshots, the probe's
// own INFO removed.
type redisDelta struct {
	Calls  float64            // all commands, including those Lua scripts ran inside Redis
	ByCmd  map[string]float64 // the same by command name
	CPU    time.Duration
	HasCPU bool
}

func (a redisSnapshot) delta(b redisSnapshot) redisDelta {
	d := redisDelta{ByCmd: map[string]float64{}, CPU: b.CPU - a.CPU, HasCPU: a.HaveCPU && b.HaveCPU}
	for name, n := range b.Calls {
		if n > a.Calls[name] {
			d.ByCmd[name] = float64(n - a.Calls[name])
		}
	}
	if d.ByCmd["info"] -= ownCallsBetween; d.ByCmd["info"] <= 0 {
		delete(d.ByCmd, "info")
	}
	for _, n := range d.ByCmd {
		d.Calls += n
	}
	return d
}

// parseCommandStats reads "cmdstat_<name>:calls=N,usec=…" lines.
func parseCommandStats(info string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("commandstats line %q: no ':'", line)
		}
		found := false
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("commandstats line %q: %w", line, err)
				}
				out[name], found = n, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("commandstats line %q: no calls=", line)
		}
	}
	return out, nil
}

// do sends one command and returns a simple-string or bulk reply. The
// connection is dialled on first use and dropped after any error.
func (p *redisProbe) do(ctx context.Context, args ...string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		if err := loopback.CheckHostPort(p.Addr); err != nil {
			return "", err
		}
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := d.DialContext(dctx, "tcp", p.Addr)
		cancel()
		if err != nil {
			return "", err
		}
		p.conn, p.rd = c, bufio.NewReader(c)
	}
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = p.conn.SetDeadline(deadline)
	reply, err := p.roundTrip(args)
	if err != nil {
		p.closeLocked()
	}
	return reply, err
}

func (p *redisProbe) roundTrip(args []string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := p.conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := p.rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis error: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 || n > 64<<20 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return "", errors.New("nil reply")
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(p.rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}

func (p *redisProbe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked()
}

func (p *redisProbe) closeLocked() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn, p.rd = nil, nil
	}
}
