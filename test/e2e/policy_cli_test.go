package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// polCLIConfig writes a complete config (on ports nothing listens on) with
// the given services and policy section, and returns its path.
func polCLIConfig(t *testing.T, p *idp, services []polService, policySection string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	cfg := `server:
  grpc_address: "127.0.0.1:19191"
  http_address: "127.0.0.1:18181"
` + polConfig(p, "info", services, policySection)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// evalDecision is what `tollgate policy eval` prints.
type evalDecision struct {
	Defined    bool                `json:"defined"`
	Allowed    bool                `json:"allowed"`
	Headers    []map[string]string `json:"headers"`
	Remove     []string            `json:"request_headers_to_remove"`
	HTTPStatus int                 `json:"http_status"`
	Body       string              `json:"body"`
}

func (d evalDecision) header(key string) string {
	for _, h := range d.Headers {
		if h["key"] == key {
			return h["value"]
		}
	}
	return ""
}

var passRE = regexp.MustCompile(`(?m)^PASS: (\d+)/(\d+)$`)

// TestPolicyCommands runs the policy commands of the binary: Rego unit
// tests, config checks naming file:line, and one-off evaluations.
func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	p := newIDP(t, 300) // only its address is used: no command fetches keys

	for _, example := range []string{"rbac", "tenant", "envoy"} {
		t.Run("policy test deploy/policies/"+example+" → exit 0, every test passes", func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, "policy", "test", examplesDir+example)
			m := passRE.FindStringSubmatch(stdout)
			if code != 0 || m == nil || m[1] != m[2] || m[1] == "0" {
				t.Errorf("tollgate policy test %s = exit %d, stdout %q, stderr %q; want exit 0 and PASS: n/n", example, code, stdout, stderr)
			}
		})
	}

	t.Run("policy test on a failing Rego test → exit 1 naming the test", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCLI(t, "policy", "test", "testdata/policy/failing_tests")
		if code != 1 || !strings.Contains(stdout, "test_reader_allowed: FAIL") || !strings.Contains(stdout, "FAIL: 1/2") {
			t.Errorf("tollgate policy test failing_tests = exit %d, stdout %q, stderr %q; want exit 1 with test_reader_allowed: FAIL and FAIL: 1/2", code, stdout, stderr)
		}
	})

	t.Run("policy test on a directory without tests → non-zero, not a silent pass", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCLI(t, "policy", "test", "testdata/policy/decision")
		if code == 0 || !strings.Contains(stderr, "no tests") {
			t.Errorf("tollgate policy test decision = exit %d, stdout %q, stderr %q; want non-zero and \"no tests\"", code, stdout, stderr)
		}
	})

	// Relative policy paths in a config are resolved against its
	// directory, a temp dir here: give them absolute.
	abs := func(rel string) string {
		a, err := filepath.Abs(rel)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	services := []polService{{name: "orders", host: ordersHost, auth: "required"}}
	t.Run("check --config with a broken policy → non-zero naming file:line", func(t *testing.T) {
		t.Parallel()
		dir := polWriteDir(t, map[string]string{"policy.rego": brokenPolicy})
		cfg := polCLIConfig(t, p, services, polSection([]string{dir}))
		code, stdout, stderr := runCLI(t, "check", "--config", cfg)
		want := filepath.Join(dir, "policy.rego") + ":5:"
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("tollgate check (broken policy) = exit %d, stdout %q, stderr %q; want non-zero and %q", code, stdout, stderr, want)
		}
	})

	t.Run("check --config with a policy that does not compile → non-zero naming file:line", func(t *testing.T) {
		t.Parallel()
		dir := polWriteDir(t, map[string]string{"policy.rego": "package tollgate.authz\n\nallow if {\n\tunknown_var == 1\n}\n"})
		cfg := polCLIConfig(t, p, services, polSection([]string{dir}))
		code, stdout, stderr := runCLI(t, "check", "--config", cfg)
		want := filepath.Join(dir, "policy.rego") + ":4:"
		if code == 0 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "unknown_var") {
			t.Errorf("tollgate check (unsafe var) = exit %d, stdout %q, stderr %q; want non-zero, %q and unknown_var", code, stdout, stderr, want)
		}
	})

	t.Run("check --config with a valid policy → exit 0", func(t *testing.T) {
		t.Parallel()
		cfg := polCLIConfig(t, p, services, polSection([]string{abs(examplesDir + "rbac")}))
		code, stdout, stderr := runCLI(t, "check", "--config", cfg)
		const cached = "policy data.tollgate.authz.allow: decisions cached, keyed by input.attributes.request.http.method, input.identity.claims.roles, input.identity.type, input.parsed_path\n"
		if code != 0 || !strings.Contains(stdout, "ok") || !strings.Contains(stdout, cached) {
			t.Errorf("tollgate check (rbac policy) = exit %d, stdout %q, stderr %q; want exit 0, ok and %q", code, stdout, stderr, cached)
		}
	})

	t.Run("check --config says why a query's decisions are not cached", func(t *testing.T) {
		t.Parallel()
		dir := polWriteDir(t, map[string]string{"policy.rego": "package tollgate.authz\n\nallow if {\n\tinput.identity.type == \"jwt\"\n\ttime.now_ns() > 0\n}\n"})
		cfg := polCLIConfig(t, p, services, polSection([]string{dir}))
		code, stdout, stderr := runCLI(t, "check", "--config", cfg)
		want := "policy data.tollgate.authz.allow: decisions not cached: " + filepath.Join(dir, "policy.rego") + ":5: calls time.now_ns"
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("tollgate check (clock policy) = exit %d, stdout %q, stderr %q; want exit 0 and %q", code, stdout, stderr, want)
		}
	})

	envoyCfg := polCLIConfig(t, p, []polService{
		{name: "shop", host: "shop.example.com", auth: "optional"},
		{name: "shop-result", host: "result.example.com", auth: "optional", query: "data.envoy.authz.result"},
	}, polSection([]string{abs("testdata/policy/envoy_style")}, `query: "data.envoy.authz.allow"`))
	tenantCfg := polCLIConfig(t, p, []polService{{name: "tenants", host: "tenants.example.com", auth: "required"}},
		polSection([]string{abs(examplesDir + "tenant")}))
	evalCases := []struct {
		name  string
		args  []string
		check func(d evalDecision) error
	}{
		{
			name: "OPA-Envoy policy, data.envoy.authz.allow, Envoy's CheckRequest → allowed",
			args: []string{"--config", envoyCfg, "--input", "testdata/policy/envoy_checkrequest.json"},
			check: func(d evalDecision) error {
				if !d.Defined || !d.Allowed || len(d.Headers) != 0 {
					return fmt.Errorf("want defined, allowed, no headers")
				}
				return nil
			},
		},
		{
			name: "--service with its own policy_query → the decision object, credential redacted",
			args: []string{"--config", envoyCfg, "--service", "shop-result", "--input", "testdata/policy/envoy_checkrequest.json"},
			check: func(d evalDecision) error {
				if !d.Allowed || d.HTTPStatus != 200 || d.header("x-ext-auth-allow") != "yes" || d.header("x-saw-authorization") != "[REDACTED]" {
					return fmt.Errorf("want allowed, http_status 200, x-ext-auth-allow yes, x-saw-authorization [REDACTED]")
				}
				return nil
			},
		},
		{
			name: "tenant example with --identity of the path's tenant → allowed with x-tenant-id",
			args: []string{"--config", tenantCfg, "--service", "tenants", "--input", "testdata/policy/tenant_checkrequest.json", "--identity", "testdata/policy/identity.json"},
			check: func(d evalDecision) error {
				if !d.Allowed || d.header("x-tenant-id") != "acme" || !slices.Equal(d.Remove, []string{"x-tenant-override"}) {
					return fmt.Errorf("want allowed, x-tenant-id acme, request_headers_to_remove [x-tenant-override]")
				}
				return nil
			},
		},
		{
			name: "tenant example without --identity (anonymous) → denied 403 with the policy's body, exit 0",
			args: []string{"--config", tenantCfg, "--input", "testdata/policy/tenant_checkrequest.json"},
			check: func(d evalDecision) error {
				if !d.Defined || d.Allowed || d.HTTPStatus != 403 || d.Body != `{"error":"tenant_mismatch"}` {
					return fmt.Errorf(`want defined, denied, http_status 403, body {"error":"tenant_mismatch"}`)
				}
				return nil
			},
		},
	}
	for _, tc := range evalCases {
		t.Run("policy eval: "+tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"policy", "eval"}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("tollgate %s = exit %d, stdout %q, stderr %q; want exit 0", strings.Join(args, " "), code, stdout, stderr)
			}
			var d evalDecision
			if err := json.Unmarshal([]byte(stdout), &d); err != nil {
				t.Fatalf("tollgate policy eval stdout %q: not a decision: %v", stdout, err)
			}
			if err := tc.check(d); err != nil {
				t.Errorf("tollgate policy eval printed %s; %v", stdout, err)
			}
			if strings.Contains(stdout+stderr, "c2lnbmF0dXJl") {
				t.Errorf("tollgate policy eval output contains the request's bearer token; want it never printed")
			}
		})
	}

	t.Run("deploy/policies/README example: policy eval --policy rbac with its input and identity → allowed", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := runCLI(t, "policy", "eval", "--policy", examplesDir+"rbac",
			"--input", "../../policy/testdata/checkrequest.json", "--identity", "../../policy/testdata/identity.json")
		var d evalDecision
		if err := json.Unmarshal([]byte(stdout), &d); code != 0 || err != nil || !d.Defined || !d.Allowed {
			t.Errorf("tollgate policy eval (README example) = exit %d, stdout %q, stderr %q; want exit 0 and an allowed decision", code, stdout, stderr)
		}
	})

	t.Run("policy eval of a runtime error → exit 1 naming the error and file:line", func(t *testing.T) {
		t.Parallel()
		dir := polCopyDir(t, "testdata/policy/errors")
		in := filepath.Join(t.TempDir(), "conflict.json")
		b, err := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": "/conflict", "host": ordersHost,
		}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(in, b, 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "policy", "eval", "--policy", dir, "--input", in)
		if code != 1 || !strings.Contains(stderr, "eval_conflict_error") || !strings.Contains(stderr, "policy.rego:") {
			t.Errorf("tollgate policy eval (conflict) = exit %d, stdout %q, stderr %q; want exit 1 naming eval_conflict_error at policy.rego:LINE", code, stdout, stderr)
		}
	})
}
