package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// This file holds the helpers of the session and issuer tests: a tollgate
// launcher that can also open the admin listener, pass environment
// variables and stop a server mid-test; real redis-server processes; the
// session admin API spoken as plain HTTP.

// tgOptions configures launchTollgate.
type tgOptions struct {
	// body is the config after the server section.
	body string
	// admin adds server.admin_address on a free loopback port.
	admin bool
	// env is added to the inherited environment of the process.
	env []string
	// dir holds the config file ("" = a new temp dir). Relative paths in
	// body (keys.dir, admin.token_file, …) resolve against it, so two
	// servers launched on one dir share them.
	dir string
}

// tgProc is a tollgate launched by launchTollgate.
type tgProc struct {
	*tollgate
	adminAddr string
	stopped   bool // stopped by shutdown; the cleanup then leaves it alone
}

// launchTollgate is startTollgate with the options above. t.Cleanup stops
// the server with SIGTERM and requires exit 0, unless shutdown already
// did.
func launchTollgate(t *testing.T, o tgOptions) *tgProc {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	const attempts = 3
	for i := 1; ; i++ {
		p, err := tryLaunch(t, o)
		if err == nil {
			return p
		}
		if !errors.Is(err, errAddrInUse) || i == attempts {
			t.Fatalf("start tollgate: %v", err)
		}
		t.Logf("start tollgate (attempt %d): %v; retrying on other ports", i, err)
	}
}

func tryLaunch(t *testing.T, o tgOptions) (*tgProc, error) {
	t.Helper()
	n := 2
	if o.admin {
		n = 3
	}
	ports := freePorts(t, n)
	f, err := os.CreateTemp(o.dir, "tollgate-*.yaml")
	if err != nil {
		t.Fatalf("create config: %v", err)
	}
	p := &tgProc{tollgate: &tollgate{
		grpcAddr: ports[0],
		httpAddr: ports[1],
		cfgPath:  f.Name(),
		stderr:   &syncBuffer{},
		done:     make(chan struct{}),
	}}
	srv := fmt.Sprintf("server:\n  grpc_address: %q\n  http_address: %q\n", ports[0], ports[1])
	if o.admin {
		p.adminAddr = ports[2]
		srv += fmt.Sprintf("  admin_address: %q\n", ports[2])
	}
	cfg := srv + "  startup_timeout: \"10s\"\n  shutdown_timeout: \"5s\"\n" + o.body
	_, werr := f.WriteString(cfg)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		t.Fatalf("write config: %v", werr)
	}
	tg := p.tollgate
	if err := tg.spawn(t, o.env, cfg); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if !p.stopped {
			tg.stop(t)
		}
	})
	conn, err := grpc.NewClient(tg.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s) = %v", tg.grpcAddr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	tg.client = authv3.NewAuthorizationClient(conn)
	return p, nil
}

// shutdown stops the server now (SIGTERM, exit 0 required).
func (p *tgProc) shutdown(t *testing.T) {
	t.Helper()
	p.stopped = true
	p.stop(t)
}

// jwksURL is the JWKS Tollgate publishes on its HTTP listener.
func (p *tgProc) jwksURL() string { return "http://" + p.httpAddr + "/.well-known/jwks.json" }

// runCLIEnv is runCLI with extra environment variables.
func runCLIEnv(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, tollgateBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("tollgate %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// redisServerBin is the Redis the tests run; the tests fail without it.
const redisServerBin = "/usr/bin/redis-server"

// redisServer is a real redis-server process on a loopback port, with no
// persistence except the dump an explicit SAVE writes into its dir (which a
// restart on the same dir loads).
type redisServer struct {
	addr string
	dir  string
	log  *syncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a redis-server on a free loopback port. t.Cleanup kills
// it; register it before the servers that use it, so it outlives them.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := os.Stat(redisServerBin); err != nil {
		t.Fatalf("redis-server is required (apt-get install redis-server): %v", err)
	}
	r := &redisServer{dir: t.TempDir(), log: &syncBuffer{}}
	const attempts = 3
	for i := 1; ; i++ {
		r.addr = freePorts(t, 1)[0]
		err := r.spawn(t)
		if err == nil {
			break
		}
		if i == attempts {
			t.Fatalf("start redis-server: %v", err)
		}
		t.Logf("start redis-server (attempt %d): %v; retrying on another port", i, err)
	}
	t.Cleanup(func() { r.kill(t) })
	return r
}

// spawn starts redis-server on r.addr and waits until it answers PING.
func (r *redisServer) spawn(t *testing.T) error {
	t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	cmd := exec.Command(redisServerBin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--dbfilename", "dump.rdb")
	cmd.Stdout, cmd.Stderr = r.log, r.log
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", redisServerBin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.cmd, r.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: r.addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited: %s", r.addr, r.log.String())
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			r.kill(t)
			return fmt.Errorf("redis-server on %s: no PONG within 5s: %v; log:\n%s", r.addr, err, r.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart starts a new redis-server on the same address and dir.
func (r *redisServer) restart(t *testing.T) {
	t.Helper()
	if err := r.spawn(t); err != nil {
		t.Fatalf("restart redis-server on %s: %v", r.addr, err)
	}
}

// kill ends the process with SIGKILL (which also ends a frozen one).
func (r *redisServer) kill(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Errorf("redis-server on %s did not exit after SIGKILL", r.addr)
	}
}

// signal sends sig (SIGSTOP freezes: connections are accepted by the
// kernel but never answered).
func (r *redisServer) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// client returns a go-redis client for the test's own inspection.
func (r *redisServer) client(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dump returns every key of the database with all its values, read by
// SCAN and the read command of the key's type.
func (r *redisServer) dump(t *testing.T) map[string][]string {
	t.Helper()
	c := r.client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out := map[string][]string{}
	var cursor uint64
	for range 10000 { // bounded: far more rounds than these tests create keys
		keys, next, err := c.Scan(ctx, cursor, "*", 100).Result()
		if err != nil {
			t.Fatalf("redis SCAN: %v", err)
		}
		for _, k := range keys {
			typ, err := c.Type(ctx, k).Result()
			if err != nil {
				t.Fatalf("redis TYPE %q: %v", k, err)
			}
			var vals []string
			switch typ {
			case "string":
				v, err := c.Get(ctx, k).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					t.Fatalf("redis GET %q: %v", k, err)
				}
				vals = []string{v}
			case "hash":
				m, err := c.HGetAll(ctx, k).Result()
				if err != nil {
					t.Fatalf("redis HGETALL %q: %v", k, err)
				}
				for f, v := range m {
					vals = append(vals, f, v)
				}
			case "zset":
				zs, err := c.ZRangeWithScores(ctx, k, 0, -1).Result()
				if err != nil {
					t.Fatalf("redis ZRANGE %q: %v", k, err)
				}
				for _, z := range zs {
					vals = append(vals, fmt.Sprint(z.Member), fmt.Sprint(z.Score))
				}
			case "set":
				if vals, err = c.SMembers(ctx, k).Result(); err != nil {
					t.Fatalf("redis SMEMBERS %q: %v", k, err)
				}
			case "list":
				if vals, err = c.LRange(ctx, k, 0, -1).Result(); err != nil {
					t.Fatalf("redis LRANGE %q: %v", k, err)
				}
			case "none": // expired between SCAN and TYPE
				continue
			default:
				t.Fatalf("redis key %q has unexpected type %q", k, typ)
			}
			out[k] = vals
		}
		cursor = next
		if cursor == 0 {
			return out
		}
	}
	t.Fatal("redis SCAN did not finish within 10000 rounds")
	return nil
}

// assertNoRawSessionIDs reads every key and value of r and fails if any
// holds one of ids. Each of liveHashes (id_hash of sessions still alive)
// must name a record key, so the scan cannot pass on an empty database.
func assertNoRawSessionIDs(t *testing.T, r *redisServer, ids, liveHashes []string) {
	t.Helper()
	if len(ids) == 0 {
		t.Fatal("no session IDs were created; the scan would pass vacuously")
	}
	db := r.dump(t)
	for k, vals := range db {
		hay := k + "\x00" + strings.Join(vals, "\x00")
		for _, id := range ids {
			if strings.Contains(hay, id) {
				t.Errorf("redis key %q (or its value) contains a raw session ID (%.8s…); want only its SHA-256", k, id)
			}
		}
	}
	for _, h := range liveHashes {
		if _, ok := db["tollgate:s:"+h]; !ok {
			t.Errorf("redis keys = %v; want a record key tollgate:s:%s for a live session", keysOf(db), h)
		}
	}
	t.Logf("scanned %d redis keys for %d session IDs", len(db), len(ids))
}

func keysOf(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// writeAdminToken writes a random admin token to dir/admin.token.
func writeAdminToken(t *testing.T, dir string) (path, token string) {
	t.Helper()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	token = hex.EncodeToString(b)
	path = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatalf("write admin token: %v", err)
	}
	return path, token
}

// adminAPI speaks the session admin API as plain HTTP.
type adminAPI struct {
	base  string // http://host:port
	token string
}

func (p *tgProc) admin(token string) adminAPI {
	return adminAPI{base: "http://" + p.adminAddr, token: token}
}

// do sends one request with the admin bearer token (token "" sends none).
func (a adminAPI) do(t *testing.T, method, path, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("json.Marshal(admin body): %v", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		t.Fatalf("admin request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// createdSession is the 201 answer of POST /v1/sessions.
type createdSession struct {
	SessionID string    `json:"session_id"`
	IDHash    string    `json:"id_hash"`
	ExpiresAt time.Time `json:"expires_at"`
}

// create creates a session for subject with claims and requires 201.
func (a adminAPI) create(t *testing.T, subject string, claims map[string]any) createdSession {
	t.Helper()
	body := map[string]any{"subject": subject}
	if claims != nil {
		body["claims"] = claims
	}
	status, _, b := a.do(t, http.MethodPost, "/v1/sessions", a.token, body)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/sessions = %d %s; want 201", status, b)
	}
	var out createdSession
	if err := json.Unmarshal(b, &out); err != nil || out.SessionID == "" || out.IDHash == "" {
		t.Fatalf("POST /v1/sessions body = %s; want {session_id, id_hash, expires_at} (%v)", b, err)
	}
	return out
}

// revoke logs one session out and requires 204.
func (a adminAPI) revoke(t *testing.T, id string) {
	t.Helper()
	if status, _, b := a.do(t, http.MethodDelete, "/v1/sessions/"+id, a.token, nil); status != http.StatusNoContent {
		t.Fatalf("DELETE /v1/sessions/{id} = %d %s; want 204", status, b)
	}
}

// revokeSubject logs subject out everywhere and requires 204.
func (a adminAPI) revokeSubject(t *testing.T, subject string) {
	t.Helper()
	if status, _, b := a.do(t, http.MethodDelete, "/v1/subjects/"+subject+"/sessions", a.token, nil); status != http.StatusNoContent {
		t.Fatalf("DELETE /v1/subjects/%s/sessions = %d %s; want 204", subject, status, b)
	}
}

// sessionCookie is the Cookie header of a browser holding session id
// between two unrelated cookies.
func sessionCookie(id string) map[string]string {
	return map[string]string{"cookie": "a=1; tollgate_session=" + id + "; b=2"}
}

// checkWith sends the golden request for ordersHost with extra headers.
func checkWith(t *testing.T, tg *tollgate, reqID string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	return tg.check(t, checkRequest(t, ordersHost, reqID, "", headers))
}

// upstreamHeader returns the value the OkResponse sets for key, and
// requires OVERWRITE_IF_EXISTS_OR_ADD without the deprecated append field.
func upstreamHeader(t *testing.T, resp *authv3.CheckResponse, key string) string {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("Check = %s; want allowed", describe(resp))
	}
	h, found := headerValue(ok.GetHeaders(), key)
	if !found {
		t.Fatalf("Check OkResponse headers = %v; want %q set", ok.GetHeaders(), key)
	}
	if got := h.GetAppendAction(); got != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
		t.Errorf("Check OkResponse header %q append_action = %v; want OVERWRITE_IF_EXISTS_OR_ADD", key, got)
	}
	if usesDeprecatedAppend(h) {
		t.Errorf("Check OkResponse header %q sets the deprecated append field; want only append_action", key)
	}
	return h.GetHeader().GetValue()
}

// requireAllowed fails unless resp allows.
func requireAllowed(t *testing.T, what string, resp *authv3.CheckResponse) {
	t.Helper()
	if !allowed(resp) {
		t.Fatalf("Check(%s) = %s (body %q); want allowed", what, describe(resp), resp.GetDeniedResponse().GetBody())
	}
}

// sessionDenied is the checkCase of a 401 for session reason code, whose
// fixed description is description.
func sessionDenied(code, description string) checkCase {
	return deny("", nil, code, description)
}
