package session

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The package's tests run against real redis-server processes they start
// on free loopback ports, in temporary directories, and stop at the end.
// Without redis-server the tests fail.
var (
	sharedRedis  *redisServer // single node
	sharedClustr *redisServer // one-node Redis Cluster owning every slot
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	// go-redis logs reconnection attempts through a process-wide logger;
	// the tests provoke plenty of them on purpose.
	redis.SetLogger(quietLogger{})
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// A fuzz worker runs only the fuzz target (no Redis) and is
		// killed rather than stopped: start nothing it could leak.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "tollgate-session-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sharedRedis, err = startRedis(filepath.Join(dir, "single"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the session tests need redis-server:", err)
		return 1
	}
	defer sharedRedis.stop()
	sharedClustr, err = startRedisCluster(filepath.Join(dir, "cluster"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting a one-node redis cluster:", err)
		return 1
	}
	defer sharedClustr.stop()
	code := m.Run()
	if code == 0 {
		for _, srv := range []*redisServer{sharedRedis, sharedClustr} {
			if err := checkNoRawIDs(srv.addr); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: raw session IDs in Redis at %s: %v\n", srv.addr, err)
				code = 1
			}
		}
	}
	return code
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// redisServer is a redis-server process owned by the tests.
type redisServer struct {
	addr string
	dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func redisBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	const p = "/usr/bin/redis-server"
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("redis-server not found in PATH or at %s", p)
	}
	return p, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts redis-server in dir (created) on a free loopback port,
// without persistence. extra arguments are appended.
func startRedis(dir string, extra ...string) (*redisServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port may be taken before redis binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &redisServer{
			addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			dir:  dir,
			args: append([]string{
				"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--dir", dir,
				"--logfile", filepath.Join(dir, "redis.log"), "--loglevel", "warning",
				"--maxmemory-policy", "noeviction",
			}, extra...),
		}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *redisServer) start() error {
	bin, err := redisBinary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, s.args...)
	cmd.Dir = s.dir
	// Should the test binary be killed, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := rawPing(s.addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("redis-server on %s not ready: %v (log: %s)", s.addr, err, s.logTail())
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited (log: %s)", s.addr, s.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *redisServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return strings.TrimSpace(string(b))
}

// stop terminates the server (SIGTERM, SIGKILL after 5s) and waits.
func (s *redisServer) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// rawPing sends PING over a fresh connection.
func rawPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// startRedisCluster starts a one-node cluster owning all 16384 slots: it
// enforces cluster rules (no cross-slot scripts or commands) at the cost
// of one process.
func startRedisCluster(dir string) (*redisServer, error) {
	s, err := startRedis(dir, "--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-announce-ip", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		s.stop()
		return nil, err
	}
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return s, nil
		}
		select {
		case <-ctx.Done():
			s.stop()
			return nil, fmt.Errorf("cluster not ok: %v %q", err, info)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// issuedIDs records every session ID the tests obtained, for the final
// check that none of them is stored in Redis.
var issuedIDs struct {
	sync.Mutex
	ids []string
}

func recordID(id string) {
	issuedIDs.Lock()
	issuedIDs.ids = append(issuedIDs.ids, id)
	issuedIDs.Unlock()
}

// recordingStore records the IDs Create returns.
type recordingStore struct{ Store }

func (r recordingStore) Create(ctx context.Context, ns NewSession) (string, Record, error) {
	id, rec, err := r.Store.Create(ctx, ns)
	if err == nil {
		recordID(id)
	}
	return id, rec, err
}

// checkNoRawIDs SCANs every key at addr, reads every value (GET, HGETALL,
// ZRANGE, SMEMBERS, LRANGE) and fails if any issued session ID appears in
// a key or value, as text, as raw bytes or as hex of the raw bytes.
func checkNoRawIDs(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	var hay strings.Builder
	keys := 0
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		keys++
		hay.WriteString(k)
		hay.WriteByte('\n')
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			return err
		}
		var vals []string
		switch typ {
		case "string":
			v, err := c.Get(ctx, k).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			vals = []string{v}
		case "hash":
			m, err := c.HGetAll(ctx, k).Result()
			if err != nil {
				return err
			}
			for f, v := range m {
				vals = append(vals, f, v)
			}
		case "zset":
			zs, err := c.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				return err
			}
			for _, z := range zs {
				vals = append(vals, fmt.Sprint(z.Member), strconv.FormatFloat(z.Score, 'f', -1, 64))
			}
		case "set":
			if vals, err = c.SMembers(ctx, k).Result(); err != nil {
				return err
			}
		case "list":
			if vals, err = c.LRange(ctx, k, 0, -1).Result(); err != nil {
				return err
			}
		case "none": // expired meanwhile
		default:
			return fmt.Errorf("unexpected key type %s", typ)
		}
		for _, v := range vals {
			hay.WriteString(v)
			hay.WriteByte('\n')
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	issuedIDs.Lock()
	ids := append([]string(nil), issuedIDs.ids...)
	issuedIDs.Unlock()
	if len(ids) == 0 {
		return nil // a focused run without Redis-backed tests
	}
	h := hay.String()
	for _, id := range ids {
		raw, err := idEncoding.DecodeString(id)
		if err != nil {
			return fmt.Errorf("issued ID %s… is not canonical", id[:4])
		}
		for _, needle := range []string{id, string(raw), hex.EncodeToString(raw)} {
			if strings.Contains(h, needle) {
				return fmt.Errorf("issued session ID %s… found (%d keys scanned)", id[:4], keys)
			}
		}
	}
	if testing.Verbose() {
		fmt.Printf("checked %d keys at %s against %d issued session IDs: none found\n", keys, addr, len(ids))
	}
	return nil
}

// keyPrefixSeq gives every Redis-backed test its own key space.
var keyPrefixSeq atomic.Int64

func uniquePrefix() string {
	return fmt.Sprintf("tgtest%d:", keyPrefixSeq.Add(1))
}

// rawClient is a plain client for inspecting Redis from tests.
func rawClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clusterClient is a cluster client for the one-node cluster.
func clusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{sharedClustr.addr}, ContextTimeoutEnabled: true,
		DisableIdentity: true,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
