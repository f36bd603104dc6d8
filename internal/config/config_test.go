package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestBadConfigsNameTheKey(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(f + ".want")
			if err != nil {
				t.Fatalf("every bad config needs a .want file: %v", err)
			}
			_, err = Parse(data, f, env(nil))
			if err == nil {
				t.Fatalf("Parse(%s) = nil error; want one naming the key", f)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("Parse(%s) error =\n%v\nwant it to contain %q", f, err, line)
				}
			}
		})
	}
}

func TestGoodConfigLoadsWithDefaults(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 40)
	c, err := Parse(data, "testdata/good.yaml", env(map[string]string{"TEST_HMAC_SECRET": secret}))
	if err != nil {
		t.Fatalf("Parse(good.yaml) = %v; want nil", err)
	}
	if got := c.Issuers[1].HMACSecret.Reveal(); got != secret {
		t.Errorf("hmac_secret = %q; want the expanded env value", got)
	}
	if got := c.Issuers[0].Leeway.D(); got != 30*time.Second {
		t.Errorf("leeway = %v; want 30s", got)
	}
	if got := c.Issuers[0].RefreshMax.D(); got != time.Hour {
		t.Errorf("refresh_max default = %v; want 1h", got)
	}
	if got := c.Services[1].Auth; got != AuthOptional {
		t.Errorf("services[1].auth = %q; want optional", got)
	}
	if got := c.Services[0].PathPrefixes; len(got) != 1 || got[0] != "/" {
		t.Errorf("path_prefixes = %v; want [/]", got)
	}
	if got := c.Tokens.MaxBytes; got != 16384 {
		t.Errorf("tokens.max_bytes default = %d; want 16384", got)
	}
}

func TestStringNeverShowsSecrets(t *testing.T) {
	t.Parallel()
	secret := "very-secret-value-that-must-not-leak-0123456789"
	data := []byte(`
issuers:
  - issuer: "https://hmac.example.com"
    algorithms: ["HS256"]
    hmac_secret: "` + secret + `"
services:
  - name: a
    hosts: ["*"]
`)
	c, err := Parse(data, "", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{c.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", *c), fmt.Sprintf("%#v", c.Issuers[0])} {
		if strings.Contains(s, secret) {
			t.Errorf("config printed as %q; want the secret redacted", s)
		}
	}
	if !strings.Contains(c.String(), "[REDACTED]") {
		t.Errorf("String() = %q; want a redaction marker", c.String())
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Parallel()
	lookup := env(map[string]string{"A": "x", "PORT": "9999", "EVIL": "\"\nservices: []"})
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"braced variable is replaced", "a-${A}-b", "a-x-b", false},
		{"bare dollar is kept", "cost $5", "cost $5", false},
		{"double dollar is a literal dollar", "$${A}", "${A}", false},
		{"unset variable is an error", "${NOPE}", "", true},
		{"unterminated is an error", "${A", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := expand(tt.in, lookup)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("expand(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
	t.Run("an env value cannot change the document's structure", func(t *testing.T) {
		t.Parallel()
		data := []byte("server:\n  grpc_address: \"127.0.0.1:${PORT}\"\nissuers:\n  - issuer: \"${EVIL}\"\n    jwks_uri: https://x.example/jwks\n    algorithms: [ES256]\nservices:\n  - name: a\n    hosts: [\"*\"]\n")
		c, err := Parse(data, "", lookup)
		if err != nil {
			t.Fatalf("Parse = %v", err)
		}
		if c.Server.GRPCAddress != "127.0.0.1:9999" || len(c.Services) != 1 || c.Issuers[0].Issuer != "\"\nservices: []" {
			t.Errorf("Parse expanded into %+v; want the value kept as one string", c)
		}
	})
}

func TestRelativePathsResolveAgainstConfigDir(t *testing.T) {
	t.Parallel()
	data := []byte("dev:\n  enabled: true\n  key_file: keys/dev.pem\nservices:\n  - name: a\n    hosts: [\"*\"]\n")
	c, err := Parse(data, "/etc/tollgate/config.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/etc/tollgate/keys/dev.pem"; c.Dev.KeyFile != want {
		t.Errorf("dev.key_file = %q; want %q", c.Dev.KeyFile, want)
	}
}

func TestDevelopmentConfigIsValid(t *testing.T) {
	t.Parallel()
	if err := Development().Validate(); err != nil {
		t.Errorf("Development().Validate() = %v; want nil", err)
	}
}

func TestDevIssuerFetchesOverLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct{ addr, want string }{
		{"127.0.0.1:8181", "http://127.0.0.1:8181/dev/jwks.json"},
		{"0.0.0.0:8181", "http://127.0.0.1:8181/dev/jwks.json"},
		{"[::]:8181", "http://127.0.0.1:8181/dev/jwks.json"},
		{":8181", "http://127.0.0.1:8181/dev/jwks.json"},
	}
	for _, tt := range tests {
		c := Development()
		c.Server.HTTPAddress = tt.addr
		if got := c.DevIssuer(); got.JWKSURI != tt.want || got.InsecureHTTP {
			t.Errorf("DevIssuer() with http_address %q = %q (insecure %v); want %q over loopback", tt.addr, got.JWKSURI, got.InsecureHTTP, tt.want)
		}
	}
}
