package keyring

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/redis/go-redis/v9"
)

// quietLogger discards logs below error.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// baseConfig is a valid config for tests.
func baseConfig() Config {
	return Config{
		Issuer: "https://tollgate.internal",
		Claims: []string{"roles", "tenant"},
	}
}

// startKeyring builds and starts a Keyring on store, stopping it at
// cleanup.
func startKeyring(t testing.TB, cfg Config, store Store, opts ...Option) *Keyring {
	t.Helper()
	opts = append([]Option{WithLogger(quietLogger())}, opts...)
	k, err := New(cfg, store, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := k.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return k
}

func newFileStore(t testing.TB) *FileStore {
	t.Helper()
	s, err := NewFileStore(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publicSet parses the keyring's published JWKS.
func publicSet(t testing.TB, k *Keyring) jwk.Set {
	t.Helper()
	rec := httptest.NewRecorder()
	k.Publisher().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, JWKSPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d", JWKSPath, rec.Code)
	}
	set, err := jwk.Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("jwk.Parse: %v", err)
	}
	return set
}

// verifyWith verifies tok with jwx against set, for issuer and audience.
func verifyWith(set jwk.Set, tok, iss, aud string, opts ...jwt.ParseOption) (jwt.Token, error) {
	opts = append([]jwt.ParseOption{jwt.WithKeySet(set), jwt.WithIssuer(iss), jwt.WithAudience(aud), jwt.WithValidate(true)}, opts...)
	return jwt.Parse([]byte(tok), opts...)
}

// kidOf returns the kid in tok's protected header.
func kidOf(t testing.TB, tok string) string {
	t.Helper()
	msg, err := jws.ParseString(tok)
	if err != nil {
		t.Fatalf("jws.Parse: %v", err)
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	return kid
}

// naiveVerifier verifies tokens the way a plain downstream service does:
// it caches the JWKS for the Cache-Control max-age the server sends,
// refetches when the cache is stale, and on an unknown kid refetches only
// if the cache is at least max-age old.
type naiveVerifier struct {
	url, issuer string
	client      *http.Client

	mu        sync.Mutex
	set       jwk.Set
	fetchedAt time.Time
	maxAge    time.Duration
	fetches   int
}

func (v *naiveVerifier) fetchLocked() error {
	resp, err := v.client.Get(v.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", v.url, resp.Status)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return err
	}
	maxAge := time.Duration(0)
	for d := range strings.SplitSeq(resp.Header.Get("Cache-Control"), ",") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			s, err := strconv.Atoi(n)
			if err != nil {
				return fmt.Errorf("bad Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
			maxAge = time.Duration(s) * time.Second
		}
	}
	v.set, v.fetchedAt, v.maxAge = set, time.Now(), maxAge
	v.fetches++
	return nil
}

func (v *naiveVerifier) keys(kid string) (jwk.Set, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.set == nil || time.Since(v.fetchedAt) > v.maxAge {
		if err := v.fetchLocked(); err != nil {
			return nil, err
		}
	}
	if _, ok := v.set.LookupKeyID(kid); !ok && time.Since(v.fetchedAt) >= v.maxAge {
		if err := v.fetchLocked(); err != nil {
			return nil, err
		}
	}
	return v.set, nil
}

func (v *naiveVerifier) Verify(tok, aud string) error {
	msg, err := jws.ParseString(tok)
	if err != nil {
		return err
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	set, err := v.keys(kid)
	if err != nil {
		return err
	}
	if _, ok := set.LookupKeyID(kid); !ok {
		return fmt.Errorf("unknown kid %s", kid)
	}
	_, err = verifyWith(set, tok, v.issuer, aud)
	return err
}

// startRedis runs a private redis-server on a free loopback port in a
// temporary directory and stops it at cleanup. A missing redis-server is
// a failure, not a skip.
func startRedis(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("redis-server is required for this test (apt-get install redis-server): %v", err)
		}
	}
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
			"--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting redis-server: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
		deadline := time.Now().Add(5 * time.Second)
		up := false
		for time.Now().Before(deadline) {
			select {
			case <-exited:
			default:
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				up = c.Ping(ctx).Err() == nil
				cancel()
			}
			if up {
				break
			}
			select {
			case <-exited:
				deadline = time.Now() // port taken: try another
			case <-time.After(20 * time.Millisecond):
			}
		}
		c.Close()
		if up {
			t.Cleanup(stop)
			return addr
		}
		stop()
	}
	t.Fatal("redis-server did not start")
	return ""
}

func newRedisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

var testKEK = []byte("0123456789abcdef0123456789abcdef")

func newRedisStore(t testing.TB, c redis.UniversalClient) *RedisStore {
	t.Helper()
	s, err := NewRedisStore(RedisStoreConfig{Client: c, KEK: testKEK})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventRecorder collects events from Subscribe.
type eventRecorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *eventRecorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *eventRecorder) has(kind EventKind, kid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.KID == kid {
			return true
		}
	}
	return false
}
