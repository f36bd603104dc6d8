package policy

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchInput is a typical Check: an Envoy request with ten headers
// (bearer token included) and a verified JWT identity with roles.
func benchInput() *Input {
	return &Input{
		Check: envoyRequest("GET", "/api/orders/42?expand=items", map[string]string{
			"authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
		}),
		Identity: jwtIdentity("alice", `{"iss":"https://idp.example.com","sub":"alice","aud":"orders-api",
			"exp":1900000000,"iat":1800000000,"roles":["orders.reader","billing.viewer"],"tenant":"acme","email":"alice@example.com"}`),
		Service:   Service{Name: "orders", Audiences: []string{"orders-api"}},
		RequestID: "5f1c0d8e-33a7-4a4b-9a41-2c54f0a0b6de",
	}
}

// benchTimeout replaces the 50ms default: benchmarks measure cost, and on
// a shared machine one of a million evaluations can be descheduled longer.
const benchTimeout = 10 * time.Second

// rbacPolicy is a typical role-based policy: roles from the token, a
// role → permissions table in data.
const rbacPolicy = `package tollgate.authz

default allow := false

allow if {
	some role in input.identity.claims.roles
	some p in data.permissions[role]
	p.method == input.attributes.request.http.method
	startswith(input.attributes.request.http.path, p.prefix)
}
`

const rbacData = `{"permissions": {
	"orders.reader": [{"method": "GET", "prefix": "/api/orders"}, {"method": "HEAD", "prefix": "/api/orders"}],
	"orders.writer": [{"method": "POST", "prefix": "/api/orders"}, {"method": "PUT", "prefix": "/api/orders/"}],
	"billing.viewer": [{"method": "GET", "prefix": "/api/invoices"}],
	"admin": [{"method": "DELETE", "prefix": "/api/"}]
}}`

func rbacEngine(b *testing.B) *Engine {
	b.Helper()
	dir := b.TempDir()
	for name, content := range map[string]string{"policy.rego": rbacPolicy, "data.json": rbacData} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	e, err := New(Config{Paths: []string{dir}, Timeout: benchTimeout}, WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkEvalRBAC is what policy evaluation adds to a Check with a
// typical role-based policy: input build, evaluation, decision decoding.
func BenchmarkEvalRBAC(b *testing.B) {
	e := rbacEngine(b)
	in := benchInput()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := e.Eval(ctx, in)
		if err != nil || !res.Allowed {
			b.Fatalf("Eval = %+v, %v", res, err)
		}
	}
}

// BenchmarkEvalRBACExample is the same with the shipped RBAC example
// (route table with glob patterns, roles as array or string), and
// Tollgate's defaults: after the first Check the decision cache answers.
func BenchmarkEvalRBACExample(b *testing.B) {
	benchExample(b, DecisionCacheConfig{}, false)
}

// BenchmarkEvalRBACExampleNoCache evaluates the example on every Check.
func BenchmarkEvalRBACExampleNoCache(b *testing.B) {
	benchExample(b, DecisionCacheConfig{Disabled: true}, false)
}

// BenchmarkEvalRBACExampleMiss is the cache's worst case: every Check has
// a path never seen before (an order id), so each one builds a key,
// misses, evaluates, and inserts, evicting once the cache is full.
func BenchmarkEvalRBACExampleMiss(b *testing.B) {
	benchExample(b, DecisionCacheConfig{MaxEntries: 1000}, true)
}

func benchExample(b *testing.B, cache DecisionCacheConfig, distinct bool) {
	e, err := New(Config{Paths: []string{filepath.Join(examples, "rbac")}, Timeout: benchTimeout, DecisionCache: cache}, WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	var paths []string
	if distinct {
		paths = make([]string, 1<<16)
		for i := range paths {
			paths[i] = "/api/orders/" + strconv.Itoa(i)
		}
	}
	http := in.Check.Attributes.Request.Http
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if distinct {
			http.Path = paths[i%len(paths)]
			i++
		}
		res, err := e.Eval(ctx, in)
		if err != nil || !res.Allowed {
			b.Fatalf("Eval = %+v, %v", res, err)
		}
	}
}

// BenchmarkEvalRBACParallel is BenchmarkEvalRBAC from all cores at once,
// to show the evaluation path does not contend.
func BenchmarkEvalRBACParallel(b *testing.B) {
	e := rbacEngine(b)
	in := benchInput()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if res, err := e.Eval(ctx, in); err != nil || !res.Allowed {
				b.Errorf("Eval = %+v, %v", res, err)
				return
			}
		}
	})
}

// BenchmarkInputBuild is the input document alone.
func BenchmarkInputBuild(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildInput(in, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInputBuildPluginWay is the same document built the OPA-Envoy
// plugin's way (reflection into map[string]any, then
// ast.InterfaceToValue), for comparison; identity and service left out.
func BenchmarkInputBuildPluginWay(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		_ = pluginInput(b, in.Check)
	}
}

// BenchmarkEvalFloor is the same Check against `allow := true` with an
// empty input: OPA's fixed cost per evaluation plus the engine's own
// (timeout guard, options, decoding), for comparison with the above.
func BenchmarkEvalFloor(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package tollgate.authz\n\nallow := true\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	// The decision reads no input, so the cache would answer every call:
	// off, to measure evaluation.
	e, err := New(Config{Paths: []string{dir}, Timeout: benchTimeout, DecisionCache: DecisionCacheConfig{Disabled: true}}, WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	in := &Input{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res, err := e.Eval(ctx, in); err != nil || !res.Allowed {
			b.Fatalf("Eval = %+v, %v", res, err)
		}
	}
}
