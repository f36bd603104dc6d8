package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// devPorts are the fixed addresses of the embedded development config.
var devPorts = []string{"127.0.0.1:9191", "127.0.0.1:8181", "127.0.0.1:8282"}

// TestDevDefaults runs `tollgate serve` with no config at all, as
// `make run` does, in a fresh working directory, and walks the README's
// quick start: a dev token is allowed to read and refused (403, by the
// example policy) to write, a token with a writer role may write, an
// in-memory session created with `tollgate session create` is allowed
// with an internal JWT and refused once revoked, and an edit of the
// example policy is served without a restart.
//
// It needs the development ports free; a `make run` left running on this
// machine makes it fail, saying so.
func TestDevDefaults(t *testing.T) {
	for _, addr := range devPorts {
		if ln, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("development port %s is taken (is a `make run` still running?): %v", addr, err)
		} else {
			ln.Close()
		}
	}
	dir := t.TempDir()
	var stderr syncBuffer
	srv := exec.Command(tollgateBin, "serve")
	srv.Dir, srv.Stdout, srv.Stderr = dir, &stderr, &stderr
	setDeathSignal(srv)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = srv.Process.Kill()
			<-done
			t.Errorf("tollgate did not exit within %v of SIGTERM", stopTimeout)
		}
		if t.Failed() {
			t.Logf("tollgate stderr:\n%s", stderr.String())
		}
	})
	if ok, _ := polEventually(15*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get("http://127.0.0.1:8181/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); !ok {
		t.Fatalf("dev server not ready within 15s; stderr:\n%s", stderr.String())
	}

	// cli runs tollgate in the dev working directory.
	cli := func(t *testing.T, stdin string, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, tollgateBin, args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.Stdin = dir, &out, &errb, strings.NewReader(stdin)
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("tollgate %s: %v", strings.Join(args, " "), err)
		}
		return cmd.ProcessState.ExitCode(), out.String() + errb.String()
	}
	var sent sentTokens
	token := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out := cli(t, "", append([]string{"dev-token", "--sub", "alice"}, args...)...)
		tok := strings.TrimSpace(out)
		if code != 0 || strings.Count(tok, ".") != 2 {
			t.Fatalf("dev-token = exit %d, %q", code, out)
		}
		sent.add(tok)
		return tok
	}
	expect := func(t *testing.T, wantCode int, want []string, args ...string) string {
		t.Helper()
		code, out := cli(t, "", append([]string{"client"}, args...)...)
		if code != wantCode {
			t.Errorf("tollgate client %v = exit %d; want %d; output:\n%s", args, code, wantCode, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("tollgate client %v output lacks %q:\n%s", args, w, out)
			}
		}
		return out
	}

	alice := token(t)
	t.Run("a dev token may read, with an internal JWT for the service", func(t *testing.T) {
		expect(t, 0, []string{"ALLOWED", "x-user-id: alice", "x-internal-jwt: ey"}, "--token", alice)
	})
	t.Run("the example policy refuses a write without a role: 403", func(t *testing.T) {
		expect(t, 1, []string{"DENIED 403 (policy_denied)"}, "--method", "POST", "--token", alice)
	})
	t.Run("a writer may write", func(t *testing.T) {
		expect(t, 0, []string{"ALLOWED", "x-user-roles: writer"}, "--method", "POST", "--token", token(t, "--claim", `roles=["writer"]`))
	})
	t.Run("no credential: 401", func(t *testing.T) {
		expect(t, 1, []string{"DENIED 401 (credential_missing)"})
	})

	t.Run("an in-memory session, created and revoked with the CLI's dev defaults", func(t *testing.T) {
		code, out := cli(t, "", "session", "create", "--subject", "bob", "--claim", "roles=admin")
		m := regexp.MustCompile(`(?m)^session_id\s+(\S+)$`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("session create = exit %d, %q", code, out)
		}
		id := m[1]
		sent.add(id)
		cookie := "cookie: theme=dark; tollgate_session=" + id
		expect(t, 0, []string{"ALLOWED", "x-user-id: bob", "x-internal-jwt: ey", "cookie: theme=dark"}, "--method", "DELETE", "-H", cookie)
		if code, out := cli(t, id+"\n", "session", "revoke", "-"); code != 0 {
			t.Fatalf("session revoke = exit %d, %q", code, out)
		}
		expect(t, 1, []string{"DENIED 401 (session_not_found)"}, "-H", cookie)
	})

	t.Run("the example policy's own tests pass", func(t *testing.T) {
		if code, out := cli(t, "", "policy", "test", ".tollgate/policy"); code != 0 || !strings.Contains(out, "PASS: 5/5") {
			t.Errorf("policy test .tollgate/policy = exit %d; output:\n%s", code, out)
		}
	})

	t.Run("secrets are private files", func(t *testing.T) {
		for _, f := range []string{".tollgate/admin-token", ".tollgate/dev-key.pem"} {
			if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, %v; want mode 0600", f, fi.Mode(), err)
			}
		}
	})

	t.Run("an edit of the example policy is served without a restart", func(t *testing.T) {
		polReplaceFile(t, filepath.Join(dir, ".tollgate/policy/policy.rego"), "package tollgate.authz\n\nallow := true\n")
		ok, _ := polEventually(3*time.Second, 50*time.Millisecond, func() bool {
			code, _ := cli(t, "", "client", "--method", "POST", "--token", alice)
			return code == 0
		})
		if !ok {
			t.Error("POST still denied 3s after the policy was edited to allow everything")
		}
	})

	t.Run("logs never contain a token or session ID", func(t *testing.T) {
		assertNoTokenInLogs(t, stderr.String(), sent.all())
	})
}
