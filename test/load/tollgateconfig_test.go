package main

import (
	"bytes"
	"testing"

	"go.yaml.in/yaml/v3"
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
	raw := tollgateConfig("127.0.0.1:40001", "127.0.0.1:40002", "http://127.0.0.1:40003", "http://127.0.0.1:40003/jwks.json")
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
