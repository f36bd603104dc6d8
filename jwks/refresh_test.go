package jwks

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// singleIssuer returns a started Verifier for one ES256 issuer served by p.
func singleIssuer(t *testing.T, p *idp, clk *clock, mod func(*IssuerConfig), opts ...Option) *Verifier {
	t.Helper()
	ic := IssuerConfig{Issuer: issA, JWKSURI: p.jwksURI(), Algorithms: []string{"ES256"}}
	if mod != nil {
		mod(&ic)
	}
	return newVerifier(t, Config{Issuers: []IssuerConfig{ic}}, append([]Option{WithClock(clk.Now)}, opts...)...)
}

func TestRotation_NewKidAcceptedAfterOneCoalescedRefresh(t *testing.T) {
	t.Parallel()
	k := keys()
	old := signer{k.ec256, "ES256", "2024"}
	next := signer{k.ec256b, "ES256", "2025"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "2024"}))
	v := singleIssuer(t, p, newClock(testNow), nil)
	waitReady(t, v)
	before := p.jwksHits.Load()

	// The IdP adds a key; tokens signed with it arrive at once, in bulk.
	p.setKeys(
		jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "2024"}),
		jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "2025"}),
	)
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		raw := next.mint(t, claims(issA, set("jti", fmt.Sprint(i))), nil)
		wg.Go(func() { _, errs[i] = v.Verify(t.Context(), raw) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Verify(token #%d with new kid) = %v; want a token", i, err)
		}
	}
	if got := p.jwksHits.Load() - before; got != 1 {
		t.Errorf("key set fetches for %d concurrent new-kid tokens = %d; want 1", n, got)
	}
	if _, err := v.Verify(t.Context(), old.mint(t, claims(issA), nil)); err != nil {
		t.Errorf("Verify(token with old kid) = %v; want a token", err)
	}
}

func TestRotation_KeyReplacedUnderTheSameKidIsPickedUp(t *testing.T) {
	t.Parallel()
	k := keys()
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "main"}))
	v := singleIssuer(t, p, newClock(testNow), nil)
	waitReady(t, v)
	p.setKeys(jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "main"}))
	if _, err := v.Verify(t.Context(), signer{k.ec256b, "ES256", "main"}.mint(t, claims(issA), nil)); err != nil {
		t.Errorf("Verify(token of the new key under the old kid) = %v; want a token", err)
	}
	if _, err := v.Verify(t.Context(), signer{k.ec256, "ES256", "main"}.mint(t, claims(issA), nil)); code(t, err) != reason.TokenSignature {
		t.Errorf("Verify(token of the replaced key) = %v; want %s", err, reason.TokenSignature)
	}
}

func TestUnknownKidFlood_AtMostOneFetchPerInterval(t *testing.T) {
	t.Parallel()
	k := keys()
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	clk := newClock(testNow)
	v := singleIssuer(t, p, clk, func(ic *IssuerConfig) { ic.UnknownKeyRefreshInterval = time.Minute })
	waitReady(t, v)
	before := p.jwksHits.Load()

	// Half the flood names random kids, half forges signatures under the
	// known kid; both may only trigger the rate-limited refresh.
	flood := func(n int) {
		var wg sync.WaitGroup
		for i := range n {
			s, want := signer{k.ec256, "ES256", rand.Text()}, reason.TokenUnknownKey
			if i%2 == 1 {
				s, want = signer{k.ec256b, "ES256", "k1"}, reason.TokenSignature
			}
			raw := s.mint(t, claims(issA), nil)
			wg.Go(func() {
				if _, err := v.Verify(t.Context(), raw); code(t, err) != want {
					t.Errorf("Verify(kid %s) = %v; want %s", s.kid, err, want)
				}
			})
		}
		wg.Wait()
	}
	flood(200)
	if got := p.jwksHits.Load() - before; got != 1 {
		t.Errorf("fetches after 200 forged tokens = %d; want 1", got)
	}
	clk.Advance(30 * time.Second)
	flood(50)
	if got := p.jwksHits.Load() - before; got != 1 {
		t.Errorf("fetches after more forged tokens within the interval = %d; want 1", got)
	}
	clk.Advance(31 * time.Second)
	flood(50)
	if got := p.jwksHits.Load() - before; got != 2 {
		t.Errorf("fetches after forged tokens in the next interval = %d; want 2", got)
	}
}

func TestFetchFailure_KeepsServingLastGoodKeySet(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	clk := newClock(testNow)
	v := singleIssuer(t, p, clk, func(ic *IssuerConfig) { ic.UnknownKeyRefreshInterval = time.Second })
	waitReady(t, v)

	for _, failure := range []struct {
		name   string
		break_ func()
	}{
		{"HTTP 500", func() { p.setStatus(http.StatusInternalServerError) }},
		{"not JSON", func() { p.setStatus(0); p.mu.Lock(); p.body = []byte("<html>"); p.mu.Unlock() }},
		{"no usable key", func() {
			p.mu.Lock()
			p.body = mustJSON(t, map[string]any{"keys": []json.RawMessage{jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1", "use": "enc"})}})
			p.mu.Unlock()
		}},
		{"server gone", p.srv.Close}, // last: the server does not come back
	} {
		failure.break_()
		before := p.jwksHits.Load()
		clk.Advance(2 * time.Second)
		// An unknown kid forces a refresh, which fails.
		if _, err := v.Verify(t.Context(), s.withKid("other").mint(t, claims(issA), nil)); code(t, err) != reason.TokenUnknownKey {
			t.Errorf("%s: Verify(unknown kid) = %v; want %s", failure.name, err, reason.TokenUnknownKey)
		}
		// A closed server counts no hits.
		if p.jwksHits.Load() == before && failure.name != "server gone" {
			t.Errorf("%s: no refresh was attempted", failure.name)
		}
		if _, err := v.Verify(t.Context(), s.mint(t, claims(issA, set("jti", failure.name)), nil)); err != nil {
			t.Errorf("%s: Verify(token with cached key) = %v; want a token", failure.name, err)
		}
		if m := v.Missing(); len(m) != 0 {
			t.Errorf("%s: Missing() = %q; want none", failure.name, m)
		}
	}
}

func TestNeverLoaded_MissingAndUnavailableUntilTheIdPRecovers(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	p.setStatus(http.StatusBadGateway)
	v, err := New(Config{Issuers: []IssuerConfig{{Issuer: issA, JWKSURI: p.jwksURI(), Algorithms: []string{"ES256"}}}},
		quiet, WithClock(newClock(testNow).Now), withBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Missing(); len(got) != 1 || got[0] != issA {
		t.Errorf("Missing() before Start = %q; want [%q]", got, issA)
	}
	raw := s.mint(t, claims(issA), nil)
	if _, err := v.Verify(t.Context(), raw); code(t, err) != reason.JWKSUnavailable {
		t.Errorf("Verify before Start = %v; want %s", err, reason.JWKSUnavailable)
	}
	if err := v.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	waitFor(t, "retries", func() bool { return p.jwksHits.Load() >= 3 })
	if got := v.Missing(); len(got) != 1 {
		t.Errorf("Missing() while the IdP fails = %q; want [%q]", got, issA)
	}
	if _, err := v.Verify(t.Context(), raw); code(t, err) != reason.JWKSUnavailable {
		t.Errorf("Verify while the IdP fails = %v; want %s", err, reason.JWKSUnavailable)
	}
	p.setStatus(0)
	waitReady(t, v)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify after the IdP recovered = %v; want a token", err)
	}
}

func TestRefreshInterval_ClampsCacheControl(t *testing.T) {
	t.Parallel()
	const lo, hi = time.Minute, time.Hour
	tests := []struct {
		name   string
		values []string
		want   time.Duration
	}{
		{"no header → default within bounds", nil, defaultRefresh},
		{"max-age inside bounds → max-age", []string{"public, max-age=600"}, 10 * time.Minute},
		{"max-age below MinRefresh → MinRefresh", []string{"max-age=5"}, lo},
		{"max-age above MaxRefresh → MaxRefresh", []string{"max-age=86400"}, hi},
		{"max-age 0 → MinRefresh", []string{"max-age=0"}, lo},
		{"no-cache → MinRefresh", []string{"no-cache"}, lo},
		{"no-store wins over max-age → MinRefresh", []string{"max-age=600, no-store"}, lo},
		{"quoted max-age → max-age", []string{`max-age="900"`}, 15 * time.Minute},
		{"upper-case directive → max-age", []string{"MAX-AGE=1200"}, 20 * time.Minute},
		{"garbage max-age → default", []string{"max-age=soon"}, defaultRefresh},
		{"negative max-age → default", []string{"max-age=-5"}, defaultRefresh},
		{"overflowing max-age → MaxRefresh", []string{"max-age=99999999999999999"}, hi},
		{"several header lines → last max-age", []string{"public", "max-age=120"}, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("Cache-Control", v)
			}
			if got := refreshInterval(h, lo, hi); got != tt.want {
				t.Errorf("refreshInterval(%q) = %v; want %v", tt.values, got, tt.want)
			}
		})
	}
}

func TestRefreshLoop_HonoursClampedMaxAge(t *testing.T) {
	t.Parallel()
	k := keys()
	tests := []struct {
		name         string
		cacheControl string
		min, max     time.Duration
		window       time.Duration
		atLeast      int64
		atMost       int64
	}{
		{"huge max-age is clamped down to MaxRefresh", "max-age=86400", 10 * time.Millisecond, 40 * time.Millisecond, 400 * time.Millisecond, 4, 20},
		{"max-age 0 is clamped up to MinRefresh", "max-age=0", 150 * time.Millisecond, time.Hour, 400 * time.Millisecond, 2, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
			p.cacheControl = tt.cacheControl
			v := singleIssuer(t, p, newClock(testNow), func(ic *IssuerConfig) { ic.MinRefresh, ic.MaxRefresh = tt.min, tt.max })
			waitReady(t, v)
			time.Sleep(tt.window)
			if got := p.jwksHits.Load(); got < tt.atLeast || got > tt.atMost {
				t.Errorf("fetches in %v with %q, clamp [%v, %v] = %d; want %d..%d", tt.window, tt.cacheControl, tt.min, tt.max, got, tt.atLeast, tt.atMost)
			}
		})
	}
}

func TestKeySet_SkipsUnusableKeysAndLogsNoKeyMaterial(t *testing.T) {
	t.Parallel()
	k := keys()
	encKey := jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "enc1", "use": "enc"})
	private := jwkJSON(t, k.ec384, map[string]any{"kid": "priv"})
	p := newIDP(t,
		encKey,
		json.RawMessage(`{"kty":"EC","crv":"P-256","kid":"broken","x":"AAAA","y":"AAAA"}`),
		json.RawMessage(`{"kty":"oct","kid":"sym","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`),
		json.RawMessage(`"not an object"`),
		json.RawMessage(`{"kty":"RSA","kid":"rsa1024","e":"AQAB","n":"`+enc.EncodeToString(k.rsa1024.N.Bytes())+`"}`),
		jwkJSON(t, &k.rsa.PublicKey, map[string]any{"kid": "rsa-es", "alg": "ES256"}),
		jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "wrap", "key_ops": []string{"wrapKey"}}),
		jwkJSON(t, k.x25519.PublicKey(), map[string]any{"kid": "x25519"}),
		private,
		jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "good"}),
	)
	logs := &syncBuffer{}
	v := singleIssuer(t, p, newClock(testNow), func(ic *IssuerConfig) {
		ic.Algorithms = []string{"ES256", "ES384", "RS256"}
		ic.UnknownKeyRefreshInterval = time.Hour
	}, WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	waitReady(t, v)

	tests := []struct {
		name  string
		token string
		want  reason.Code
	}{
		{"use enc key is ignored → unknown key", signer{k.ec256b, "ES256", "enc1"}.mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"invalid EC point is skipped → unknown key", signer{k.ec256b, "ES256", "broken"}.mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"RSA key under 2048 bits is skipped → unknown key", signer{k.rsa1024, "RS256", "rsa1024"}.mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"key whose alg does not fit its type is skipped → unknown key", signer{k.rsa, "RS256", "rsa-es"}.mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"key_ops without verify is skipped → unknown key", signer{k.ec256b, "ES256", "wrap"}.mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"private key in the set verifies with its public half → ok", signer{k.ec384, "ES384", "priv"}.mint(t, claims(issA), nil), reason.OK},
		{"valid key next to broken ones → ok", signer{k.ec256, "ES256", "good"}.mint(t, claims(issA), nil), reason.OK},
	}
	for _, tt := range tests {
		if _, err := v.Verify(t.Context(), tt.token); code(t, err) != tt.want {
			t.Errorf("%s: Verify(token) = %v; want %s", tt.name, err, tt.want)
		}
	}
	out := logs.String()
	for _, kid := range []string{"enc1", "broken", "sym", "rsa1024", "rsa-es", "wrap", "x25519"} {
		if !strings.Contains(out, `"kid":"`+kid+`"`) {
			t.Errorf("log lacks a skip line for kid %q:\n%s", kid, out)
		}
	}
	if !strings.Contains(out, `"index":3`) {
		t.Errorf("log lacks a skip line for the non-object entry (index 3):\n%s", out)
	}
	var material []string
	for _, raw := range []json.RawMessage{encKey, private} {
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		for _, f := range []string{"x", "y", "d", "n"} {
			if s, ok := m[f].(string); ok {
				material = append(material, s)
			}
		}
	}
	material = append(material, "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")
	for _, m := range material {
		if strings.Contains(out, m) {
			t.Errorf("log contains key material %q", short(m))
		}
	}
}

func TestParseKeySet_RejectsDocumentsWithoutUsableKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", "<html>"},
		{"no keys member", `{"kid":"x"}`},
		{"keys null", `{"keys":null}`},
		{"empty keys", `{"keys":[]}`},
		{"only symmetric keys", `{"keys":[{"kty":"oct","k":"AAAA"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if keys, _, err := parseKeySet([]byte(tt.body)); err == nil {
				t.Errorf("parseKeySet(%s) = %d keys, nil; want an error", tt.body, len(keys))
			}
		})
	}
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	tests := []struct {
		name      string
		docIssuer string // "" = the server's URL
		docJWKS   string // "" = the server's /jwks
		wantReady bool
	}{
		{"discovered jwks_uri is used → ready", "", "", true},
		{"document for another issuer → never loads", "https://other.test", "", false},
		{"http jwks_uri for a non-loopback host → never loads", "", "http://keys.example.com/jwks", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
			p.docIssuer, p.docJWKSURI = tt.docIssuer, tt.docJWKS
			v := newVerifier(t, Config{Issuers: []IssuerConfig{{Issuer: p.srv.URL, Discovery: true, Algorithms: []string{"ES256"}}}},
				WithClock(newClock(testNow).Now), withBackoff(5*time.Millisecond, 10*time.Millisecond))
			if !tt.wantReady {
				waitFor(t, "discovery attempts", func() bool { return p.discoveryHits.Load() >= 2 })
				if got := v.Missing(); len(got) != 1 {
					t.Errorf("Missing() = %q; want [%q]", got, p.srv.URL)
				}
				if got := p.jwksHits.Load(); got != 0 {
					t.Errorf("key set fetches = %d; want 0", got)
				}
				return
			}
			waitReady(t, v)
			if _, err := v.Verify(t.Context(), s.mint(t, claims(p.srv.URL), nil)); err != nil {
				t.Errorf("Verify(token of discovered issuer) = %v; want a token", err)
			}
		})
	}
}

func TestFetchDocument_EnforcesLimitsAndScheme(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write([]byte(`{"keys":[`))
			_, _ = w.Write([]byte(strings.Repeat(" ", maxDocumentBytes)))
			_, _ = w.Write([]byte(`]}`))
		case "/ok":
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/ok", http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	client := defaultHTTPClient()
	client.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()

	tests := []struct {
		name    string
		url     string
		wantErr string
	}{
		{"body over 1 MiB → error", plain.URL + "/big", "exceeds"},
		{"https redirecting to http → error", tlsSrv.URL + "/jwks", "redirect"},
		{"small body → ok", plain.URL + "/ok", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := fetchDocument(t.Context(), client, tt.url, false)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("fetchDocument(%s) = %v; want nil", tt.url, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("fetchDocument(%s) = %v; want error containing %q", tt.url, err, tt.wantErr)
			}
		})
	}
}

// Whatever client the caller supplies, a response whose final URL breaks
// the transport policy is refused.
func TestFetchDocument_ChecksFinalURLWithCustomClient(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	t.Cleanup(srv.Close)
	rewrite := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			r2 := r.Clone(r.Context())
			r2.URL.Host = "keys.example.com"
			resp.Request = r2
		}
		return resp, err
	})}
	if _, _, err := fetchDocument(t.Context(), rewrite, srv.URL, false); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("fetchDocument(final URL http://keys.example.com) = %v; want a transport policy error", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLifecycle(t *testing.T) {
	t.Parallel()
	k := keys()
	cfg := func(uri string) Config {
		return Config{Issuers: []IssuerConfig{{Issuer: issA, JWKSURI: uri, Algorithms: []string{"ES256"}}}}
	}
	t.Run("Stop before Start → nil, and Start afterwards fails", func(t *testing.T) {
		t.Parallel()
		v, err := New(cfg("https://idp.test/jwks"), quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Stop(t.Context()); err != nil {
			t.Errorf("Stop() before Start = %v; want nil", err)
		}
		if err := v.Start(t.Context()); err == nil {
			t.Errorf("Start() after Stop = nil; want an error")
		}
	})
	t.Run("Start twice → error; Stop twice → nil", func(t *testing.T) {
		t.Parallel()
		p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
		v, err := New(cfg(p.jwksURI()), quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(t.Context()); err != nil {
			t.Fatalf("Start() = %v; want nil", err)
		}
		if err := v.Start(t.Context()); err == nil {
			t.Errorf("second Start() = nil; want an error")
		}
		for i := range 2 {
			if err := v.Stop(t.Context()); err != nil {
				t.Errorf("Stop() #%d = %v; want nil", i, err)
			}
		}
	})
	t.Run("Start with a cancelled context → error", func(t *testing.T) {
		t.Parallel()
		v, err := New(cfg("https://idp.test/jwks"), quiet)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := v.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Start(cancelled) = %v; want context.Canceled", err)
		}
		if err := v.Stop(t.Context()); err != nil {
			t.Errorf("Stop() after failed Start = %v; want nil", err)
		}
	})
	t.Run("Stop honours its deadline when a fetch ignores cancellation", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		entered := make(chan struct{}, 1)
		stuck := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
			entered <- struct{}{}
			<-release
			return nil, errors.New("released")
		})}
		v, err := New(cfg("https://idp.test/jwks"), quiet, WithHTTPClient(stuck))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		<-entered
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if err := v.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop(20ms) with a stuck fetch = %v; want context.DeadlineExceeded", err)
		}
		close(release)
		if err := v.Stop(t.Context()); err != nil {
			t.Errorf("Stop() after release = %v; want nil", err)
		}
	})
	t.Run("keys loaded before Stop keep verifying, without refreshes", func(t *testing.T) {
		t.Parallel()
		p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
		v, err := New(cfg(p.jwksURI()), quiet, WithClock(newClock(testNow).Now))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		waitReady(t, v)
		if err := v.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		hits := p.jwksHits.Load()
		s := signer{k.ec256, "ES256", "k1"}
		if _, err := v.Verify(t.Context(), s.mint(t, claims(issA), nil)); err != nil {
			t.Errorf("Verify after Stop = %v; want a token", err)
		}
		if _, err := v.Verify(t.Context(), s.withKid("k2").mint(t, claims(issA), nil)); code(t, err) != reason.TokenUnknownKey {
			t.Errorf("Verify(unknown kid) after Stop = %v; want %s", err, reason.TokenUnknownKey)
		}
		if got := p.jwksHits.Load(); got != hits {
			t.Errorf("fetches after Stop = %d; want %d", got, hits)
		}
	})
}

func TestHMACOnlyIssuer_NeedsNoKeySet(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Issuers: []IssuerConfig{{Issuer: issA, Algorithms: []string{"HS256"}, HMACSecret: hmacSecretA}}},
		WithClock(newClock(testNow).Now))
	if got := v.Missing(); len(got) != 0 {
		t.Errorf("Missing() = %q; want none", got)
	}
	if _, err := v.Verify(t.Context(), signer{hmacSecretA, "HS256", ""}.mint(t, claims(issA), nil)); err != nil {
		t.Errorf("Verify(HS256) = %v; want a token", err)
	}
	if _, err := v.Verify(t.Context(), signer{hmacSecretA, "HS384", ""}.mint(t, claims(issA), nil)); code(t, err) != reason.TokenAlgorithm {
		t.Errorf("Verify(HS384 with an HS256-only issuer) = %v; want %s", err, reason.TokenAlgorithm)
	}
}

func TestCarryOver_KeepsIdentityOfUnchangedKeys(t *testing.T) {
	t.Parallel()
	mk := func(kid string, b byte) *verifyKey {
		k := &verifyKey{kid: kid}
		k.algs.add(algES256)
		k.thumb[0] = b
		return k
	}
	a, b, dupA := mk("a", 1), mk("b", 2), mk("a", 1)
	prev := newKeySet([]*verifyKey{a, b, dupA}, testNow)
	a2, bRekeyed, c := mk("a", 1), mk("b", 9), mk("c", 3)
	merged, added, removed := carryOver(prev, []*verifyKey{a2, bRekeyed, c})
	if merged[0] != a || merged[1] != bRekeyed || merged[2] != c {
		t.Errorf("carryOver merged = %v; want [prev a, new b, new c]", merged)
	}
	if added != 2 {
		t.Errorf("carryOver added = %d; want 2", added)
	}
	if len(removed) != 2 || removed[0] != b || removed[1] != dupA {
		t.Errorf("carryOver removed = %v; want [prev b, duplicate a]", removed)
	}
}
