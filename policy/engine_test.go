package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Decisions are decoded once into a Result: booleans, the plugin's object
// with every field, both header forms; anything malformed is an error.
func TestEvalDecodesDecisions(t *testing.T) {
	t.Parallel()
	md, _ := structpb.NewStruct(map[string]any{"tier": "gold", "n": 2.0})
	tests := []struct {
		name    string
		rego    string
		want    Result
		wantErr string // substring of the error; "" for none
	}{
		{name: "true → allow", rego: `allow := true`, want: Result{Defined: true, Allowed: true}},
		{name: "false → deny", rego: `allow := false`, want: Result{Defined: true}},
		{name: "undefined → deny, not an error", rego: `allow if input.nope`, want: Result{}},
		{name: "object with every field", rego: `allow := {
			"allowed": true,
			"headers": {"x-user": "alice", "x-multi": ["a", "b"]},
			"request_headers_to_remove": ["x-internal"],
			"response_headers_to_add": [{"set-cookie": "a=1"}, {"set-cookie": "b=2"}],
			"http_status": 200,
			"body": "ok",
			"dynamic_metadata": {"tier": "gold", "n": 2},
			"query_parameters_to_set": {"page": "1", "tag": ["x", "y"]},
			"query_parameters_to_remove": {"debug"},
		}`, want: Result{
			Defined: true, Allowed: true,
			Headers:                 []Header{{"x-multi", "a"}, {"x-multi", "b"}, {"x-user", "alice"}},
			RequestHeadersToRemove:  []string{"x-internal"},
			ResponseHeadersToAdd:    []Header{{"set-cookie", "a=1"}, {"set-cookie", "b=2"}},
			HTTPStatus:              200,
			Body:                    "ok",
			DynamicMetadata:         md,
			QueryParametersToSet:    []Header{{"page", "1"}, {"tag", "x"}, {"tag", "y"}},
			QueryParametersToRemove: []string{"debug"},
		}},
		{name: "denial with status, headers and body", rego: `allow := {"allowed": false, "http_status": 429, "headers": {"retry-after": "5"}, "body": "slow down"}`,
			want: Result{Defined: true, HTTPStatus: 429, Headers: []Header{{"retry-after", "5"}}, Body: "slow down"}},
		{name: "unknown fields are ignored", rego: `allow := {"allowed": true, "note": 1}`, want: Result{Defined: true, Allowed: true}},
		{name: "missing allowed → error", rego: `allow := {"headers": {}}`, wantErr: `no "allowed"`},
		{name: "allowed as a string → error", rego: `allow := {"allowed": "yes"}`, wantErr: `"allowed" must be a boolean`},
		{name: "http_status as a string → error", rego: `allow := {"allowed": false, "http_status": "403"}`, wantErr: "http_status"},
		{name: "http_status not a status → error", rego: `allow := {"allowed": false, "http_status": 999}`, wantErr: "invalid HTTP status"},
		{name: "header value a number → error", rego: `allow := {"allowed": true, "headers": {"x": 1}}`, wantErr: "headers"},
		{name: "headers a string → error", rego: `allow := {"allowed": true, "headers": "x"}`, wantErr: "headers"},
		{name: "body an object → error", rego: `allow := {"allowed": false, "body": {}}`, wantErr: "body"},
		{name: "dynamic_metadata an array → error", rego: `allow := {"allowed": true, "dynamic_metadata": []}`, wantErr: "dynamic_metadata"},
		{name: "headers to remove with a number → error", rego: `allow := {"allowed": true, "request_headers_to_remove": ["a", 1]}`, wantErr: "request_headers_to_remove"},
		{name: "a string decision → error", rego: `allow := "yes"`, wantErr: "boolean or an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, Config{Paths: []string{policyDir(t, "package tollgate.authz\n"+tt.rego+"\n")}})
			got, err := e.Eval(t.Context(), &Input{Check: envoyRequest("GET", "/", nil)})
			if tt.wantErr != "" {
				var ee *EvalError
				if reason.Of(err) != reason.PolicyError || !errors.As(err, &ee) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Eval = %+v, %v; want a policy_error containing %q", got, err, tt.wantErr)
				}
				if got.Allowed {
					t.Errorf("Eval allowed on error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Eval = %v", err)
			}
			gotMD, wantMD := got.DynamicMetadata, tt.want.DynamicMetadata
			got.DynamicMetadata, tt.want.DynamicMetadata = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Eval = %+v; want %+v", got, tt.want)
			}
			if !proto.Equal(gotMD, wantMD) {
				t.Errorf("Eval dynamic_metadata = %v; want %v", gotMD, wantMD)
			}
		})
	}
}

// Runtime errors and timeouts are errors with stable codes and OPA's
// location; they never allow and never panic.
func TestEvalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		rego     string
		timeout  time.Duration
		ctx      func(context.Context) (context.Context, context.CancelFunc)
		code     reason.Code
		is       error
		location string
	}{
		{name: "conflicting rule values → policy_error at file:line", rego: "package tollgate.authz\n\nallow := true\n\nallow := false if input.parsed_path[0] == \"\"\n",
			code: reason.PolicyError, location: "policy.rego:"},
		{name: "object key conflict → policy_error", rego: "package tollgate.authz\n\nx[\"k\"] := 1\n\nx[\"k\"] := 2 if input.parsed_path\n\nallow := x.k == 1\n",
			code: reason.PolicyError},
		{name: "slow policy with 1ms timeout → policy_timeout", timeout: time.Millisecond, rego: `package tollgate.authz
allow if count([x | some i in numbers.range(1, 2000); some j in numbers.range(1, 2000); x := i * j]) > 0
`, code: reason.PolicyTimeout, is: ErrTimeout},
		{name: "caller's deadline → policy_timeout wrapping DeadlineExceeded", timeout: time.Minute, rego: `package tollgate.authz
allow if count([x | some i in numbers.range(1, 2000); some j in numbers.range(1, 2000); x := i * j]) > 0
`, ctx: func(c context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(c, 2*time.Millisecond)
		},
			code: reason.PolicyTimeout, is: context.DeadlineExceeded},
		{name: "caller cancelled → policy_error wrapping Canceled", rego: "package tollgate.authz\nallow := true\n",
			ctx: func(c context.Context) (context.Context, context.CancelFunc) {
				c, cancel := context.WithCancel(c)
				cancel()
				return c, func() {}
			}, code: reason.PolicyError, is: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, Config{Paths: []string{policyDir(t, tt.rego)}, Timeout: tt.timeout})
			ctx := t.Context()
			if tt.ctx != nil {
				var cancel context.CancelFunc
				ctx, cancel = tt.ctx(ctx)
				defer cancel()
			}
			start := time.Now()
			res, err := e.Eval(ctx, &Input{Check: envoyRequest("GET", "/", nil)})
			if reason.Of(err) != tt.code {
				t.Fatalf("Eval = %+v, %v; want code %s", res, err, tt.code)
			}
			if res.Allowed || res.Defined {
				t.Errorf("Eval result = %+v; want the zero (deny) result", res)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Eval error %v does not wrap %v", err, tt.is)
			}
			if tt.location != "" && !strings.Contains(err.Error(), tt.location) {
				t.Errorf("Eval error %q lacks location %q", err, tt.location)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Eval took %s; cancellation did not stop it", d)
			}
		})
	}
}

// A broken policy fails New with file:line; a missing path too.
func TestNewReportsCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		cfg   Config
		want  []string
	}{
		{"parse error names file:line", map[string]string{"p.rego": "package tollgate.authz\n\nallow if {\n  input.x ==\n"}, Config{}, []string{"p.rego:", "rego_parse_error"}},
		{"type error names file:line", map[string]string{"p.rego": "package tollgate.authz\n\nallow if {\n  count(1) > 0\n}\n"}, Config{}, []string{"p.rego:4", "rego_type_error"}},
		{"v0 syntax under v1 fails", map[string]string{"p.rego": "package tollgate.authz\n\nallow { true }\n"}, Config{}, []string{"p.rego:3"}},
		{"bad data file", map[string]string{"data.json": "{"}, Config{}, []string{"data.json"}},
		{"failing Rego test with test_on_reload", map[string]string{
			"p.rego":      "package tollgate.authz\n\nallow := false\n",
			"p_test.rego": "package tollgate.authz_test\n\ntest_allows if data.tollgate.authz.allow\n",
		}, Config{TestOnReload: true}, []string{"p_test.rego:3", "test_allows"}},
		{"bad query", map[string]string{"p.rego": "package x\n"}, Config{Query: "input.x"}, []string{"query"}},
		{"bad rego version", map[string]string{"p.rego": "package x\n"}, Config{RegoVersion: "v2"}, []string{"rego_version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			tt.cfg.Paths = []string{dir}
			for _, f := range []func() error{
				func() error { _, err := New(tt.cfg, WithLogger(quiet)); return err },
				func() error { _, err := Check(tt.cfg); return err },
			} {
				err := f()
				if err == nil {
					t.Fatalf("New/Check = nil; want an error containing %q", tt.want)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			}
		})
	}
	if _, err := New(Config{Paths: []string{filepath.Join(t.TempDir(), "missing")}}); err == nil {
		t.Errorf("New(missing path) = nil; want an error")
	}
}

// Old policies load with rego_version v0; services can have their own
// query; test files are not served; data documents are loaded.
func TestEvalQueriesVersionsAndData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"main.rego":         "package tollgate.authz\n\nallow if input.service.name in data.allowed.services\n",
		"envoy/envoy.rego":  "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n",
		"allowed/data.json": `{"services": ["billing"]}`,
		"more/x.yaml":       "limit: 3\n",
		"main_test.rego":    "package tollgate.authz\n\ntest_x if true\n",
		".hidden/bad.rego":  "this is not rego",
	})
	e := newEngine(t, Config{Paths: []string{dir}, ServiceQueries: map[string]string{"catalog": "data.envoy.authz.allow"}})
	for _, tt := range []struct {
		service string
		method  string
		allowed bool
	}{
		{"billing", "POST", true},
		{"orders", "GET", false},
		{"catalog", "GET", true},
		{"catalog", "POST", false},
	} {
		res, err := e.Eval(t.Context(), &Input{Check: envoyRequest(tt.method, "/", nil), Service: Service{Name: tt.service}})
		if err != nil || res.Allowed != tt.allowed {
			t.Errorf("Eval(%s %s) = %+v, %v; want allowed=%v", tt.service, tt.method, res, err, tt.allowed)
		}
	}

	v0 := newEngine(t, Config{RegoVersion: "v0", Paths: []string{policyDir(t, "package tollgate.authz\n\ndefault allow = false\n\nallow { input.parsed_path[0] == \"ok\" }\n")}})
	res, err := v0.Eval(t.Context(), &Input{Check: envoyRequest("GET", "/ok", nil)})
	if err != nil || !res.Allowed {
		t.Errorf("v0 Eval = %+v, %v; want allowed", res, err)
	}
}

// Without a CheckRequest (another front door), the policy still gets the
// identity and service, and empty request fields.
func TestEvalWithoutCheckRequest(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{Paths: []string{policyDir(t, "package tollgate.authz\n\nallow if {\n\tinput.attributes == {}\n\tinput.parsed_path == [\"\"]\n\tinput.identity.subject == \"alice\"\n}\n")}})
	res, err := e.Eval(t.Context(), &Input{Identity: jwtIdentity("alice", `{}`)})
	if err != nil || !res.Allowed {
		t.Errorf("Eval(nil Check) = %+v, %v; want allowed", res, err)
	}
}

// A bundle-only engine denies with ErrNotLoaded until its first bundle.
func TestEvalBeforeFirstBundle(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{Bundle: &BundleConfig{URL: "http://127.0.0.1:1/b.tar.gz"}})
	res, err := e.Eval(t.Context(), &Input{})
	if !errors.Is(err, ErrNotLoaded) || reason.Of(err) != reason.PolicyError || res.Allowed {
		t.Errorf("Eval = %+v, %v; want policy_error ErrNotLoaded", res, err)
	}
	if st := e.Status(); st.Ready {
		t.Errorf("Status().Ready = true before any policy")
	}
}

// Config.Validate reports every problem at once.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{
		Query: "input.x", RegoVersion: "v9", DecisionLog: DecisionLogConfig{Enabled: true},
		ServiceQueries: map[string]string{"a": "nope nope"},
		Bundle:         &BundleConfig{URL: "ftp://x/b", VerificationKey: "not pem", Algorithm: "XX1"},
	}.Validate()
	for _, want := range []string{"query:", "rego_version:", "decision_log.path:", "service_queries[a]:", "bundle.url:", "bundle.verification_key:", "bundle.algorithm:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to mention %q", err, want)
		}
	}
	if s := (BundleConfig{URL: "https://b", VerificationKey: "-----BEGIN PUBLIC KEY-----"}).String(); strings.Contains(s, "BEGIN") {
		t.Errorf("BundleConfig.String() = %q shows the key", s)
	}
}

// Decision logs: one JSON line per decision, no credential, written to
// the file when flushed.
func TestDecisionLog(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "decisions.log")
	clock := func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	e, err := New(Config{
		Paths:       []string{policyDir(t, "package tollgate.authz\n\nallow := {\"allowed\": false, \"http_status\": 403}\n")},
		DecisionLog: DecisionLogConfig{Enabled: true, Path: path},
	}, WithLogger(quiet), WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	req := golden(t, "checkrequest.json")
	for range 3 {
		if _, err := e.Eval(t.Context(), &Input{Check: req, Identity: jwtIdentity("alice", `{"tenant":"acme"}`), Service: Service{Name: "orders"}, RequestID: "rid-\"1\""}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(bs)), "\n")
	want := `{"timestamp":"2026-03-01T12:00:00Z","request_id":"rid-\"1\"","service":"orders","query":"data.tollgate.authz.allow","identity":{"type":"jwt","issuer":"https://idp.example.com","subject":"alice"},"decision":{"defined":true,"allowed":false,"http_status":403},"eval_duration_ns":0}`
	// The first decision is evaluated; the policy reads no input, so the
	// next two come from the decision cache and say so.
	cached := strings.TrimSuffix(want, "}") + `,"cached":true}`
	if len(lines) != 3 || lines[0] != want || lines[1] != cached || lines[2] != cached {
		t.Errorf("decision log =\n%s\nwant\n%s\nand twice\n%s", bs, want, cached)
	}
	for _, secret := range []string{"eyJ", "s3cr3t", "Bearer"} {
		if strings.Contains(string(bs), secret) {
			t.Errorf("decision log contains %q", secret)
		}
	}
}

// A claim OPA cannot represent is a policy error, not a crash.
func TestEvalUnconvertibleClaim(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{Paths: []string{policyDir(t, "package tollgate.authz\n\nallow if input.identity.claims.bad\n")}})
	res, err := e.Eval(t.Context(), &Input{Identity: Identity{Type: IdentityJWT, Claims: map[string]any{"bad": make(chan int)}}})
	if reason.Of(err) != reason.PolicyError || res.Allowed {
		t.Errorf("Eval = %+v, %v; want policy_error", res, err)
	}
}
