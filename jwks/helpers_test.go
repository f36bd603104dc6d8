package jwks

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// testKeys are generated once per test binary; RSA generation is slow.
type testKeys struct {
	ec256, ec256b, ec384, ec521 *ecdsa.PrivateKey
	rsa, rsaB, rsa1024          *rsa.PrivateKey
	ed                          ed25519.PrivateKey
	x25519                      *ecdh.PrivateKey
}

var keys = sync.OnceValue(func() *testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeys
	var err error
	k.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec256b, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	k.ec521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	must(err)
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaB, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	k.x25519, err = ecdh.X25519().GenerateKey(rand.Reader)
	must(err)
	return &k
})

// testNow is the fixed wall clock most tests run at.
var testNow = time.Unix(1_800_000_000, 0)

// clock is an adjustable time source for WithClock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// withBackoff shortens the fetch retry backoff.
func withBackoff(base, maxBackoff time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, maxBackoff }
}

var quiet = WithLogger(slog.New(slog.DiscardHandler))

// jwkJSON renders pub as a JWK with the given members set.
func jwkJSON(t testing.TB, pub any, members map[string]any) json.RawMessage {
	t.Helper()
	k, err := jwk.Import(pub)
	if err != nil {
		t.Fatalf("jwk.Import(%T): %v", pub, err)
	}
	for name, val := range members {
		if err := k.Set(name, val); err != nil {
			t.Fatalf("jwk Set(%q): %v", name, err)
		}
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// idp is a fake identity provider: an httptest server publishing a JWKS at
// /jwks and an OpenID configuration at /.well-known/openid-configuration.
type idp struct {
	srv *httptest.Server

	mu           sync.Mutex
	keys         []json.RawMessage
	body         []byte // when set, served verbatim instead of keys
	status       int    // when non-zero, served instead of 200
	cacheControl string
	docIssuer    string // issuer in the discovery document; default srv.URL
	docJWKSURI   string // jwks_uri in the discovery document; default srv.URL+"/jwks"

	jwksHits      atomic.Int64
	discoveryHits atomic.Int64
}

func newIDP(t testing.TB, keys ...json.RawMessage) *idp {
	t.Helper()
	p := &idp{keys: keys, cacheControl: "max-age=3600"}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.URL.Path {
	case "/jwks":
		p.jwksHits.Add(1)
		if p.status != 0 {
			w.WriteHeader(p.status)
			return
		}
		if p.cacheControl != "" {
			w.Header().Set("Cache-Control", p.cacheControl)
		}
		w.Header().Set("Content-Type", "application/json")
		if p.body != nil {
			_, _ = w.Write(p.body)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": p.keys})
	case "/.well-known/openid-configuration":
		p.discoveryHits.Add(1)
		iss, uri := p.docIssuer, p.docJWKSURI
		if iss == "" {
			iss = p.srv.URL
		}
		if uri == "" {
			uri = p.srv.URL + "/jwks"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": uri})
	default:
		http.NotFound(w, r)
	}
}

func (p *idp) setKeys(keys ...json.RawMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

func (p *idp) setStatus(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = code
}

func (p *idp) jwksURI() string { return p.srv.URL + "/jwks" }

// newVerifier builds and starts a Verifier, stopping it at cleanup.
func newVerifier(t testing.TB, cfg Config, opts ...Option) *Verifier {
	t.Helper()
	v, err := New(cfg, append([]Option{quiet}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := v.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return v
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitReady(t testing.TB, v *Verifier) {
	t.Helper()
	waitFor(t, "key sets to load", func() bool { return len(v.Missing()) == 0 })
}

// signer signs test tokens.
type signer struct {
	key any    // private key, or []byte for HMAC
	alg string // JWS alg
	kid string // "" for no kid
}

func (s signer) withKid(kid string) signer { s.kid = kid; return s }

// claims returns a valid claim set for issuer at testNow, modified by mods.
func claims(issuer string, mods ...func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": issuer,
		"sub": "alice",
		"aud": "api",
		"iat": testNow.Unix() - 10,
		"exp": testNow.Unix() + 3600,
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(name string, v any) func(map[string]any) {
	return func(c map[string]any) { c[name] = v }
}

func del(name string) func(map[string]any) {
	return func(c map[string]any) { delete(c, name) }
}

var enc = base64.RawURLEncoding

// mint returns a compact JWS over payload. Header members in extra are
// added after alg and kid; a nil value removes the member.
func (s signer) mint(t testing.TB, payload any, extra map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": s.alg, "typ": "JWT"}
	if s.kid != "" {
		hdr["kid"] = s.kid
	}
	for k, v := range extra {
		if v == nil {
			delete(hdr, k)
		} else {
			hdr[k] = v
		}
	}
	return s.mintRaw(t, mustJSON(t, hdr), mustJSON(t, payload))
}

// mintRaw signs the exact header and payload bytes given.
func (s signer) mintRaw(t testing.TB, hdr, payload []byte) string {
	t.Helper()
	input := enc.EncodeToString(hdr) + "." + enc.EncodeToString(payload)
	sig, err := jwsbb.Sign(s.key, s.alg, []byte(input), nil)
	if err != nil {
		t.Fatalf("sign %s: %v", s.alg, err)
	}
	return input + "." + enc.EncodeToString(sig)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// code returns the reason code of err ("ok" for nil) and fails the test
// when err is not itself a *reason.Error, as Verify promises.
func code(t testing.TB, err error) reason.Code {
	t.Helper()
	if err == nil {
		return reason.OK
	}
	re, ok := err.(*reason.Error)
	if !ok {
		t.Fatalf("error %v (%T) is not a *reason.Error", err, err)
	}
	return re.Code
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
