package jwks

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestNew_ValidatesConfig(t *testing.T) {
	t.Parallel()
	ok := IssuerConfig{Issuer: issA, JWKSURI: "https://a.idp.test/jwks", Algorithms: []string{"ES256"}}
	with := func(mod func(*IssuerConfig)) Config {
		ic := ok
		mod(&ic)
		return Config{Issuers: []IssuerConfig{ic}}
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; nil means valid
	}{
		{"valid https issuer → ok", with(func(*IssuerConfig) {}), nil},
		{"http on 127.0.0.1 → ok", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://127.0.0.1:8080/jwks" }), nil},
		{"http on [::1] → ok", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://[::1]:8080/jwks" }), nil},
		{"http on localhost → ok", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://localhost/jwks" }), nil},
		{"http elsewhere with InsecureHTTP → ok", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://keys.internal/jwks"; ic.InsecureHTTP = true }), nil},
		{"HMAC-only issuer without key set → ok", with(func(ic *IssuerConfig) {
			ic.JWKSURI = ""
			ic.Algorithms = []string{"HS256"}
			ic.HMACSecret = hmacSecretA
		}), nil},
		{"http on a non-loopback host → error naming the issuer", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://keys.example.com/jwks" }),
			[]string{`issuers[0] ("https://a.idp.test")`, "jwks_uri", "https"}},
		{"http on 127.0.0.1.example.com → error", with(func(ic *IssuerConfig) { ic.JWKSURI = "http://127.0.0.1.example.com/jwks" }), []string{"must use https"}},
		{"discovery with http issuer elsewhere → error", with(func(ic *IssuerConfig) { ic.Issuer = "http://idp.example.com"; ic.JWKSURI = ""; ic.Discovery = true }), []string{"issuer", "https"}},
		{"ftp scheme → error", with(func(ic *IssuerConfig) { ic.JWKSURI = "ftp://a.idp.test/jwks" }), []string{"unsupported scheme"}},
		{"credentials in URL → error", with(func(ic *IssuerConfig) { ic.JWKSURI = "https://user:pw@a.idp.test/jwks" }), []string{"credentials"}},
		{"relative URL → error", with(func(ic *IssuerConfig) { ic.JWKSURI = "/jwks" }), []string{"absolute"}},
		{"alg none → error", with(func(ic *IssuerConfig) { ic.Algorithms = []string{"ES256", "none"} }), []string{"algorithms[1]", "never allowed"}},
		{"unknown alg → error", with(func(ic *IssuerConfig) { ic.Algorithms = []string{"ES256K"} }), []string{"unsupported algorithm"}},
		{"no algorithms → error", with(func(ic *IssuerConfig) { ic.Algorithms = nil }), []string{"at least one algorithm"}},
		{"HS256 without secret → error", with(func(ic *IssuerConfig) { ic.Algorithms = []string{"ES256", "HS256"} }), []string{"hmac_secret", "required for HS256"}},
		{"HS512 with a short secret → error", with(func(ic *IssuerConfig) {
			ic.Algorithms = []string{"HS512"}
			ic.JWKSURI = ""
			ic.HMACSecret = hmacSecretA
		}), []string{"at least 64 bytes"}},
		{"discovery and jwks_uri → error", with(func(ic *IssuerConfig) { ic.Discovery = true }), []string{"must be empty when discovery"}},
		{"public-key alg without key set → error", with(func(ic *IssuerConfig) { ic.JWKSURI = "" }), []string{"jwks_uri", "required"}},
		{"key set for an HMAC-only issuer → error", with(func(ic *IssuerConfig) { ic.Algorithms = []string{"HS256"}; ic.HMACSecret = hmacSecretA }), []string{"allow only HMAC"}},
		{"MinRefresh above MaxRefresh → error", with(func(ic *IssuerConfig) { ic.MinRefresh = 2 * time.Hour }), []string{"min_refresh"}},
		{"negative leeway → error", with(func(ic *IssuerConfig) { ic.Leeway = -time.Second }), []string{"leeway"}},
		{"negative fetch timeout → error", with(func(ic *IssuerConfig) { ic.FetchTimeout = -time.Second }), []string{"fetch_timeout"}},
		{"empty issuer → error", with(func(ic *IssuerConfig) { ic.Issuer = "" }), []string{"issuer: must not be empty"}},
		{"no issuers → error", Config{}, []string{"at least one issuer"}},
		{"duplicate issuers → error", Config{Issuers: []IssuerConfig{ok, ok}}, []string{"duplicate of issuers[0]"}},
		{"negative cache bound → error", Config{Issuers: []IssuerConfig{ok}, CacheMaxBytes: -1}, []string{"cache_max_bytes"}},
		{"every problem is reported → all paths", Config{Issuers: []IssuerConfig{
			{Issuer: issA, JWKSURI: "http://keys.example.com", Algorithms: []string{"none"}},
			{Issuer: issB, JWKSURI: "https://b.idp.test/jwks", Algorithms: []string{"HS256"}},
		}}, []string{`issuers[0] ("https://a.idp.test"): jwks_uri`, `issuers[0] ("https://a.idp.test"): algorithms[0]`, `issuers[1] ("https://b.idp.test"): hmac_secret`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := New(tt.cfg, quiet)
			if tt.wantErr == nil {
				if err != nil || v == nil {
					t.Errorf("New(cfg) = %v, %v; want a Verifier", v, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New(cfg) = nil error; want one containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New(cfg) = %q; want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestNew_AppliesDefaults(t *testing.T) {
	t.Parallel()
	v, err := New(Config{Issuers: []IssuerConfig{{Issuer: issA, JWKSURI: "https://a.idp.test/jwks", Algorithms: []string{"ES256"}}}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ic := v.issuers[0].cfg
	got := []time.Duration{ic.MinRefresh, ic.MaxRefresh, ic.UnknownKeyRefreshInterval, ic.FetchTimeout}
	want := []time.Duration{time.Minute, time.Hour, 10 * time.Second, 5 * time.Second}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("defaults = %v; want %v", got, want)
			break
		}
	}
	if v.maxToken != DefaultMaxTokenBytes {
		t.Errorf("MaxTokenBytes default = %d; want %d", v.maxToken, DefaultMaxTokenBytes)
	}
	if n := len(v.cache.shards) * v.cache.shards[0].maxEntries; n > DefaultCacheMaxEntries || n < DefaultCacheMaxEntries-len(v.cache.shards) {
		t.Errorf("cache entry bound = %d; want ≈ %d", n, DefaultCacheMaxEntries)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}), jwkJSON(t, &k.ec384.PublicKey, map[string]any{"kid": "k2"}))
	reg := prometheus.NewRegistry()
	clk := newClock(testNow)
	v := singleIssuer(t, p, clk, nil, WithRegisterer(reg))
	waitReady(t, v)
	raw := s.mint(t, claims(issA), nil)
	for range 3 {
		if _, err := v.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(42 * time.Second)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName() + labelString(m)
			switch {
			case m.Counter != nil:
				values[name] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				values[name] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		`tollgate_jwks_fetches_total{issuer="https://a.idp.test",result="success"}`: 1,
		`tollgate_jwks_fetches_total{issuer="https://a.idp.test",result="error"}`:   0,
		`tollgate_jwks_keys{issuer="https://a.idp.test"}`:                           2,
		`tollgate_jwks_key_set_age_seconds{issuer="https://a.idp.test"}`:            42,
		`tollgate_token_cache_requests_total{result="hit"}`:                         2,
		`tollgate_token_cache_requests_total{result="miss"}`:                        1,
		`tollgate_token_cache_entries`:                                              1,
	}
	for name, w := range want {
		if got, ok := values[name]; !ok || got != w {
			t.Errorf("metric %s = %v (present %v); want %v", name, got, ok, w)
		}
	}

	if _, err := New(Config{Issuers: []IssuerConfig{{Issuer: issA, JWKSURI: p.jwksURI(), Algorithms: []string{"ES256"}}}}, quiet, WithRegisterer(reg)); err == nil {
		t.Errorf("New with an already-used registry = nil error; want a registration error")
	}
	if n := countFamilies(t, reg); n != 5 {
		t.Errorf("metric families after failed second New = %d; want 5 (registry left as it was)", n)
	}
}

func countFamilies(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return len(mfs)
}

func labelString(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
	}
	return "{" + strings.Join(parts, ",") + "}"
}
