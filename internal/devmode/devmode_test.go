package devmode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/policy"
)

func TestEnsurePolicyWritesOnceAndItsTestsPass(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	created, err := EnsurePolicy(dir)
	if err != nil || !created {
		t.Fatalf("EnsurePolicy = %v, %v; want created", created, err)
	}
	var report strings.Builder
	passed, err := policy.Test(t.Context(), &report, []string{dir}, policy.TestOptions{})
	if err != nil || !passed || !strings.Contains(report.String(), "PASS: 5/5") {
		t.Errorf("example policy tests: passed %v, %v; report:\n%s", passed, err, report.String())
	}
	// The user's edits survive the next start.
	edited := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(edited, []byte("package tollgate.authz\nallow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if created, err := EnsurePolicy(dir); err != nil || created {
		t.Fatalf("second EnsurePolicy = %v, %v; want nothing written", created, err)
	}
	if b, _ := os.ReadFile(edited); !strings.Contains(string(b), "allow := true") {
		t.Error("EnsurePolicy overwrote an edited policy")
	}
}

func TestEnsureTokenIsPrivateAndStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir", "admin-token")
	if err := EnsureToken(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	first, _ := os.ReadFile(path)
	if len(strings.TrimSpace(string(first))) != 43 {
		t.Errorf("token = %q; want 43 base64url characters", first)
	}
	if err := EnsureToken(path); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("EnsureToken replaced an existing token")
	}
}
