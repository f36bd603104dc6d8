package main

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/policy"
)

// contract mirrors the Tollgate config contract key for key. Decoding with
// KnownFields catches any key the benchmark writes that Tollgate (which
// rejects unknown keys) would refuse.
type contract struct {
	Server struct {
		GRPCAddress string `yaml:"grpc_address"`
		HTTPAddress string `yaml:"http_address"`
	} `yaml:"server"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	Issuers []struct {
		Issuer     string   `yaml:"issuer"`
		JWKSURI    string   `yaml:"jwks_uri"`
		Algorithms []string `yaml:"algorithms"`
		Leeway     string   `yaml:"leeway"`
	} `yaml:"issuers"`
	Services []struct {
		Name         string   `yaml:"name"`
		Hosts        []string `yaml:"hosts"`
		PathPrefixes []string `yaml:"path_prefixes"`
		Audiences    []string `yaml:"audiences"`
		Auth         string   `yaml:"auth"`
	} `yaml:"services"`
	Headers struct {
		ClaimsToHeaders map[string]string `yaml:"claims_to_headers"`
		Remove          []string          `yaml:"remove"`
	} `yaml:"headers"`
}

func TestTollgateConfigMatchesContract(t *testing.T) {
	t.Parallel()
	raw := tollgateConfig(tollgateSetup{GRPCAddr: "127.0.0.1:40001", HTTPAddr: "127.0.0.1:40002", IssuerURL: "http://127.0.0.1:40003", JWKSURL: "http://127.0.0.1:40003/jwks.json"})
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var c contract
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("strict decode of generated config: %v\n%s", err, raw)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.grpc_address", c.Server.GRPCAddress, "127.0.0.1:40001"},
		{"server.http_address", c.Server.HTTPAddress, "127.0.0.1:40002"},
		{"log.level", c.Log.Level, "warn"},
		{"len(issuers)", len(c.Issuers), 1},
		{"issuers[0].issuer", c.Issuers[0].Issuer, "http://127.0.0.1:40003"},
		{"issuers[0].jwks_uri", c.Issuers[0].JWKSURI, "http://127.0.0.1:40003/jwks.json"},
		{"issuers[0].algorithms", len(c.Issuers[0].Algorithms) == 1 && c.Issuers[0].Algorithms[0] == "ES256", true},
		{"issuers[0].leeway", c.Issuers[0].Leeway, "30s"},
		{"len(services)", len(c.Services), 1},
		{"services[0].name", c.Services[0].Name, "bench"},
		{"services[0].hosts", len(c.Services[0].Hosts) == 1 && c.Services[0].Hosts[0] == "*", true},
		{"services[0].path_prefixes", len(c.Services[0].PathPrefixes) == 1 && c.Services[0].PathPrefixes[0] == "/", true},
		{"services[0].audiences", len(c.Services[0].Audiences) == 1 && c.Services[0].Audiences[0] == benchAudience, true},
		{"services[0].auth", c.Services[0].Auth, "required"},
		{"headers.claims_to_headers.sub", c.Headers.ClaimsToHeaders["sub"], "x-user-id"},
		{"headers.claims_to_headers.roles", c.Headers.ClaimsToHeaders["roles"], "x-user-roles"},
		{"headers.remove", len(c.Headers.Remove) == 1 && c.Headers.Remove[0] == "authorization", true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v; want %v", ch.name, ch.got, ch.want)
		}
	}
}

// Every row's config must load with Tollgate's own loader (strict keys,
// validation) and say what the row claims to measure; app.Check also
// compiles the policy.
func TestRowConfigsLoadWithTollgatesLoader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policy")
	if err := writePolicy(policyDir); err != nil {
		t.Fatal(err)
	}
	base := tollgateSetup{GRPCAddr: "127.0.0.1:40001", HTTPAddr: "127.0.0.1:40002", IssuerURL: "http://127.0.0.1:40003", JWKSURL: "http://127.0.0.1:40003/jwks.json"}
	sessions := func(cache bool) *sessionSetup {
		return &sessionSetup{AdminAddr: "127.0.0.1:40004", AdminTokenFile: filepath.Join(dir, "admin-token"), KeysDir: "keys-x", RedisAddr: "127.0.0.1:40005", LocalCache: cache}
	}
	tests := []struct {
		name  string
		setup func(s *tollgateSetup)
		check func(t *testing.T, c *config.Config)
	}{
		{"tollgate → JWT only", func(*tollgateSetup) {}, func(t *testing.T, c *config.Config) {
			if c.Policy.Enabled() || c.Sessions.Enabled() || c.InternalToken.Enabled || c.Server.AdminAddress != "" {
				t.Errorf("policy %v, sessions %v, internal token %v, admin %q; want none", c.Policy.Enabled(), c.Sessions.Enabled(), c.InternalToken.Enabled, c.Server.AdminAddress)
			}
		}},
		{"tollgate+policy → policy from the work dir, default query", func(s *tollgateSetup) { s.PolicyDir = policyDir }, func(t *testing.T, c *config.Config) {
			if !slices.Equal(c.Policy.Paths, []string{policyDir}) || c.Policy.Query != "data.tollgate.authz.allow" {
				t.Errorf("policy paths %v query %q; want [%s] data.tollgate.authz.allow", c.Policy.Paths, c.Policy.Query, policyDir)
			}
			if !*c.Policy.DecisionCache.Enabled {
				t.Error("decision cache off; want Tollgate's default (on)")
			}
		}},
		{"tollgate+policy-nocache → the same policy, decision cache off", func(s *tollgateSetup) { s.PolicyDir, s.NoDecisionCache = policyDir, true }, func(t *testing.T, c *config.Config) {
			if !slices.Equal(c.Policy.Paths, []string{policyDir}) || *c.Policy.DecisionCache.Enabled {
				t.Errorf("policy paths %v decision cache %v; want [%s] and off", c.Policy.Paths, *c.Policy.DecisionCache.Enabled, policyDir)
			}
		}},
		{"tollgate+session → redis sessions, no local cache, minting, admin API", func(s *tollgateSetup) { s.Sessions = sessions(false) }, func(t *testing.T, c *config.Config) {
			if c.Sessions.Store != "redis" || c.Sessions.LocalCache || !slices.Equal(c.Sessions.Redis.Addrs, []string{"127.0.0.1:40005"}) || c.Sessions.Cookie != sessionCookie || c.Sessions.Redis.Timeout.D() != benchRedisTimeout {
				t.Errorf("sessions = %+v; want redis at 127.0.0.1:40005 with timeout %v, cookie %s, no local cache", c.Sessions, benchRedisTimeout, sessionCookie)
			}
			if !c.InternalToken.Enabled || c.Keys.Store != "file" || c.Keys.Dir != filepath.Join(dir, "keys-x") || !slices.Equal(c.InternalToken.Claims, []string{"roles"}) {
				t.Errorf("internal token %+v keys %+v; want minting with the file store in the work dir", c.InternalToken, c.Keys)
			}
			if c.Server.AdminAddress != "127.0.0.1:40004" || c.Admin.TokenFile != filepath.Join(dir, "admin-token") {
				t.Errorf("admin %q token file %q; want 127.0.0.1:40004 and the work dir's admin-token", c.Server.AdminAddress, c.Admin.TokenFile)
			}
			if c.Policy.Enabled() {
				t.Errorf("policy enabled; want off")
			}
		}},
		{"tollgate+session+cache → local cache on", func(s *tollgateSetup) { s.Sessions = sessions(true) }, func(t *testing.T, c *config.Config) {
			if !c.Sessions.LocalCache {
				t.Errorf("sessions.local_cache = false; want true")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := base
			tt.setup(&s)
			path := filepath.Join(dir, "x.yaml")
			c, err := config.Parse(tollgateConfig(s), path, func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatalf("config.Parse() error = %v\n%s", err, tollgateConfig(s))
			}
			if _, err := app.Check(c); err != nil {
				t.Fatalf("app.Check() error = %v", err)
			}
			tt.check(t, c)
		})
	}
}

// The policy row measures the allow path: the benchmark's request must be
// allowed for every user's roles, and the policy must really decide (the
// same reader may not DELETE).
func TestBenchPolicyAllowsTheTraffic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := writePolicy(dir); err != nil {
		t.Fatal(err)
	}
	e, err := policy.New(policy.Config{Paths: []string{dir}}, policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("policy.New() error = %v", err)
	}
	src, err := newRequestSource([]string{"tok"})
	if err != nil {
		t.Fatal(err)
	}
	roles := func(n int) map[string]any {
		var out []any
		for _, r := range benchRoles(n) {
			out = append(out, r)
		}
		return map[string]any{"roles": out}
	}
	b := src.builder(0)
	for n := range 2 {
		in := &policy.Input{Check: b.at(0), Identity: policy.Identity{Type: "jwt", Subject: "user", Claims: roles(n)}, Service: policy.Service{Name: "bench"}}
		res, err := e.Eval(t.Context(), in)
		if err != nil || !res.Allowed {
			t.Errorf("Eval(GET %s, roles %v) = %+v, %v; want allowed", benchPath, benchRoles(n), res, err)
		}
	}
	b.http.Method, b.http.Path = "DELETE", "/api/v1/items/7"
	res, err := e.Eval(t.Context(), &policy.Input{Check: b.at(0), Identity: policy.Identity{Type: "jwt", Subject: "user", Claims: roles(1)}, Service: policy.Service{Name: "bench"}})
	if err != nil || res.Allowed {
		t.Errorf("Eval(DELETE by a reader) = %+v, %v; want denied", res, err)
	}
}

func TestParseAddrLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line     string
		grpc     string
		http     string
		wantFail bool
	}{
		{line: "grpc=127.0.0.1:4000 http=127.0.0.1:4001", grpc: "127.0.0.1:4000", http: "127.0.0.1:4001"},
		{line: "http=[::1]:2 grpc=[::1]:1", grpc: "[::1]:1", http: "[::1]:2"},
		{line: "grpc=127.0.0.1:4000", wantFail: true},
		{line: "grpc=10.0.0.1:4000 http=127.0.0.1:4001", wantFail: true},
		{line: "listening", wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			g, h, err := parseAddrLine(tt.line)
			if (err != nil) != tt.wantFail {
				t.Fatalf("parseAddrLine(%q) error = %v; want error %v", tt.line, err, tt.wantFail)
			}
			if g != tt.grpc || h != tt.http {
				t.Errorf("parseAddrLine(%q) = %q, %q; want %q, %q", tt.line, g, h, tt.grpc, tt.http)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"orchestrated with both binaries → ok", []string{"-tollgate", "bin/tollgate", "-null", "bin/nullauthz"}, false},
		{"null only, tollgate skipped → ok", []string{"-null", "bin/nullauthz", "-tollgate", ""}, false},
		{"ad-hoc on loopback → ok", []string{"-addr", "127.0.0.1:9001", "-metrics-url", "http://127.0.0.1:9002/metrics", "-pid", "42"}, false},
		{"nothing to measure → error", nil, true},
		{"ad-hoc to another host → error", []string{"-addr", "192.168.1.10:9001"}, true},
		{"metrics on another host → error", []string{"-addr", "127.0.0.1:9001", "-metrics-url", "http://10.0.0.2/metrics"}, true},
		{"ad-hoc mixed with orchestration → error", []string{"-addr", "127.0.0.1:9001", "-null", "x"}, true},
		{"zero duration → error", []string{"-null", "x", "-duration", "0s"}, true},
		{"no phases → error", []string{"-null", "x", "-concurrency", "", "-rate", "0"}, true},
		{"bad concurrency list → error", []string{"-null", "x", "-concurrency", "16,abc"}, true},
		{"tollgate without the null floor → error", []string{"-tollgate", "x"}, true},
		{"unknown server row → error", []string{"-null", "x", "-tollgate", "y", "-servers", "tollgate,envoy"}, true},
		{"server row listed twice → error", []string{"-null", "x", "-tollgate", "y", "-servers", "tollgate,tollgate"}, true},
		{"Tollgate row named without -tollgate → error", []string{"-null", "x", "-servers", "tollgate+policy"}, true},
		{"-servers with -addr → error", []string{"-addr", "127.0.0.1:9001", "-servers", "tollgate"}, true},
		{"session row with no sessions → error", []string{"-null", "x", "-tollgate", "y", "-servers", "tollgate+session", "-sessions", "0"}, true},
		{"no session row, -sessions 0 is unused → ok", []string{"-null", "x", "-tollgate", "y", "-servers", "tollgate", "-sessions", "0"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args, &bytes.Buffer{})
			if (err != nil) != tt.wantErr {
				t.Errorf("parseFlags(%q) error = %v; want error %v", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestServerSelection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"default → every row", []string{"-null", "n", "-tollgate", "t"}, allRows},
		{"no -tollgate → the null rows of the default", []string{"-null", "n"}, []string{rowNullProto, rowNullVT}},
		{"the floor is always added, rows come in report order", []string{"-null", "n", "-tollgate", "t", "-servers", "tollgate+session+cache, tollgate+policy"},
			[]string{rowNullProto, rowPolicy, rowSessionCache}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := parseFlags(tt.args, &bytes.Buffer{})
			if err != nil {
				t.Fatalf("parseFlags(%q) error = %v", tt.args, err)
			}
			if !slices.Equal(o.Servers, tt.want) {
				t.Errorf("parseFlags(%q).Servers = %v; want %v", tt.args, o.Servers, tt.want)
			}
		})
	}
}
