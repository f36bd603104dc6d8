package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	t.Run("contract config → exit 0 and ok", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCLI(t, "check", "--config", "testdata/good.yaml")
		if code != 0 || !strings.Contains(stdout, "ok") {
			t.Errorf("tollgate check good.yaml = exit %d, stdout %q, stderr %q; want exit 0 and \"ok\"", code, stdout, stderr)
		}
	})
	bad, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(bad) == 0 {
		t.Fatalf("Glob(testdata/*.bad.yaml) = %v, %v; want bad configs", bad, err)
	}
	for _, path := range bad {
		t.Run(filepath.Base(path)+" → non-zero exit naming every problem", func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(path + ".want")
			if err != nil {
				t.Fatalf("every bad config needs a .want file: %v", err)
			}
			code, _, stderr := runCLI(t, "check", "--config", path)
			if code == 0 {
				t.Errorf("tollgate check %s = exit 0; want non-zero", path)
			}
			for line := range strings.Lines(string(want)) {
				if line = strings.TrimSpace(line); line != "" && !strings.Contains(stderr, line) {
					t.Errorf("tollgate check %s stderr = %q; want it to contain %q", path, stderr, line)
				}
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "tollgate ") || strings.TrimSpace(strings.TrimPrefix(stdout, "tollgate ")) == "" {
		t.Errorf("tollgate version = exit %d, stdout %q, stderr %q; want exit 0 and \"tollgate <version>\"", code, stdout, stderr)
	}
}

// TestDevMode runs the development mode end to end: the server trusts its
// own dev issuer, `tollgate dev-token` mints for it, and `tollgate client`
// sends the Check.
func TestDevMode(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "dev.pem")
	tg := startTollgate(t, `log: {level: "debug", format: "json"}
services:
  - name: "orders"
    hosts: ["orders.example.com"]
    path_prefixes: ["/"]
    audiences: ["dev"]
    auth: "required"
headers:
  claims_to_headers: {sub: "x-user-id", roles: "x-user-roles"}
  remove: ["authorization"]
tokens: {max_bytes: 16384}
dev:
  enabled: true
  key_file: "`+keyFile+`"
`)

	code, stdout, stderr := runCLI(t, "dev-token", "--config", tg.cfgPath, "--sub", "alice", "--aud", "dev")
	token := strings.TrimSpace(stdout)
	if code != 0 || strings.Count(token, ".") != 2 {
		t.Fatalf("tollgate dev-token = exit %d, stdout %q, stderr %q; want exit 0 and a JWT", code, stdout, stderr)
	}
	var sent sentTokens
	sent.add(token)

	t.Run("dev token → Check allowed with x-user-id", func(t *testing.T) {
		resp := tg.check(t, checkRequest(t, ordersHost, "dev-1", token, nil))
		assertAllowed(t, resp, checkCase{
			wantSet:    map[string]string{"x-user-id": "alice"},
			wantRemove: []string{"authorization"},
		})
	})

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
	}{
		{
			name:       "client with the dev token → ALLOWED, exit 0",
			args:       []string{"--token", token},
			wantCode:   0,
			wantStdout: []string{"ALLOWED", "x-user-id: alice"},
		},
		{
			name:       "client without a token → DENIED 401, exit 1",
			wantCode:   1,
			wantStdout: []string{"DENIED 401"},
		},
	}
	t.Run("client", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				args := append([]string{"client", "--addr", tg.grpcAddr, "--host", ordersHost}, tc.args...)
				code, stdout, stderr := runCLI(t, args...)
				if code != tc.wantCode {
					t.Errorf("tollgate client = exit %d; want %d (stdout %q, stderr %q)", code, tc.wantCode, stdout, stderr)
				}
				for _, w := range tc.wantStdout {
					if !strings.Contains(stdout, w) {
						t.Errorf("tollgate client stdout = %q; want it to contain %q", stdout, w)
					}
				}
			})
		}
	})

	t.Run("logs never contain the dev token", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), sent.all())
	})
}
