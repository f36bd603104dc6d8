package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestAnalyzeDeps(t *testing.T) {
	tests := []struct {
		name    string
		modules map[string]string
		query   string // default data.tollgate.authz.allow
		want    string // inputDeps.String(), or the start of it
	}{
		{
			name: "constant paths, deduplicated and covered by their prefixes",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if {
	input.attributes.request.http.method == "GET"
	input.attributes.request.http.method != "POST"
	input.identity.claims.roles[_] == "admin"
	input.identity.claims.tenant == "acme"
}`},
			want: "input.attributes.request.http.method, input.identity.claims.roles, input.identity.claims.tenant",
		},
		{
			name: "a prefix read covers deeper reads",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if {
	c := input.identity.claims
	c.roles[_] == "admin"
	input.identity.claims.tenant == "acme"
}`},
			want: "input.identity.claims",
		},
		{
			name: "a variable key cuts the path",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if {
	some name in ["x-a", "x-b"]
	input.attributes.request.http.headers[name] == "1"
}`},
			want: "input.attributes.request.http.headers",
		},
		{
			name: "functions, other packages, else chains and imports are followed",
			modules: map[string]string{
				"p.rego": `package tollgate.authz
import input.attributes.request.http as req
allow if {
	data.lib.admin
	m(req.method)
}
allow if level == 2
m(x) if x == input.parsed_path[0]
level := 1 if { input.service.name == "a" } else := 2 if { input.service.name == "b" } else := 3`,
				"lib.rego": `package lib
admin if input.identity.subject == "root"`,
			},
			want: "input.attributes.request.http.method, input.identity.subject, input.parsed_path, input.service.name",
		},
		{
			name: "dynamic data refs reach every rule they can select",
			modules: map[string]string{
				"p.rego": `package tollgate.authz
allow if {
	some app
	data.apps[app].ok
}`,
				"a.rego": `package apps.a
ok if input.parsed_query.a`,
				"b.rego": `package apps.b
ok if input.parsed_query.b`,
			},
			want: "input.parsed_query.a, input.parsed_query.b",
		},
		{
			name: "unreachable rules do not count",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if input.identity.type == "jwt"
debug := time.now_ns()
everything := input`},
			want: "input.identity.type",
		},
		{
			name: "per-service query reads its own rules",
			modules: map[string]string{"p.rego": `package orders
allow if input.attributes.request.http.path == "/orders"`},
			query: "data.orders.allow",
			want:  "input.attributes.request.http.path",
		},
		{
			name: "reads the whole input",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if object.get(input, "x", false)`},
			want: "uncacheable: p.rego:2: reads the whole input",
		},
		{name: "refs inside keys of other refs", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if data.grants[input.identity.subject][input.attributes.request.http.method]"},
			want: "input.attributes.request.http.method, input.identity.subject"},
		{name: "input assigned to a variable", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if {\n\tx := input\n\tx.a == 1\n}"}, want: "uncacheable: p.rego:3: reads the whole input"},
		{name: "input as a function argument", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if f(input)\nf(x) if x.a"}, want: "uncacheable: p.rego:2: reads the whole input"},
		{name: "input to a builtin", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if count(input) > 1"}, want: "uncacheable: p.rego:2: reads the whole input"},
		{name: "input compared", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if input == {}"}, want: "uncacheable: p.rego:2: reads the whole input"},
		{name: "input iterated", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if {\n\tsome k, v in input\n\tv == k\n}"}, want: "uncacheable: p.rego:3: reads the whole input"},
		{name: "input walked", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if {\n\twalk(input, [p, v])\n\tv == \"x\"\n}"}, want: "uncacheable: p.rego:3: reads the whole input"},
		{name: "input in a comprehension", modules: map[string]string{"p.rego": "package tollgate.authz\nallow if count([k | some k, _ in input]) > 0"}, want: "uncacheable: p.rego:2: reads the whole input"},
		{name: "input in a rule head", modules: map[string]string{"p.rego": "package tollgate.authz\nallow := input if true"}, want: "uncacheable: p.rego:2: reads the whole input"},
		{
			name: "a variable first key is the whole input",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if {
	some k in ["a", "b"]
	input[k] == 1
}`},
			want: "uncacheable: p.rego:4: reads the whole input",
		},
		{
			name: "the clock",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if {
	input.identity.type == "jwt"
	time.now_ns() < 2000000000000000000
}`},
			want: "uncacheable: p.rego:4: calls time.now_ns",
		},
		{
			name: "the network, in a helper",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if ok(input.identity.subject)
ok(s) if http.send({"method": "GET", "url": concat("", ["http://127.0.0.1:1/", s])}).status_code == 200`},
			want: "uncacheable: p.rego:3: calls http.send",
		},
		{
			name: "randomness",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if rand.intn("x", 2) == 0`},
			want: "uncacheable: p.rego:2: calls rand.intn",
		},
		{
			name: "with input replaced",
			modules: map[string]string{"p.rego": `package tollgate.authz
allow if inner with input as {"a": 1}
inner if input.a == 1`},
			want: "uncacheable: p.rego:2: reads the whole input",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ast.MustCompileModules(tc.modules)
			q := tc.query
			if q == "" {
				q = DefaultQuery
			}
			d, err := analyzeDeps(c, q)
			if err != nil {
				t.Fatal(err)
			}
			got := d.String()
			// Reasons end with the call or ref; paths must match exactly.
			if strings.HasPrefix(tc.want, "uncacheable") && !strings.HasPrefix(got, tc.want) ||
				!strings.HasPrefix(tc.want, "uncacheable") && got != tc.want {
				t.Errorf("deps = %q, want %q", got, tc.want)
			}
		})
	}
}

// The shipped examples are what most users start from: their decisions
// must be cacheable.
func TestAnalyzeDeps_ExamplesAreCacheable(t *testing.T) {
	for _, tc := range []struct{ dir, query, want string }{
		{"rbac", DefaultQuery, "input.attributes.request.http.method, input.identity.claims.roles, input.identity.type, input.parsed_path"},
		{"tenant", DefaultQuery, "input.identity.claims.roles, input.identity.claims.tenant, input.identity.type, input.parsed_path"},
		{"envoy", "data.envoy.authz.allow", "input.attributes.request.http.method, input.attributes.source.address.socketAddress.address, input.attributes.source.principal, input.parsed_path"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			g, err := build(t.Context(), Config{Paths: []string{filepath.Join(examples, tc.dir)}, Query: tc.query}.withDefaults(), nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := g.def.deps.String(); got != tc.want {
				t.Errorf("deps = %q, want %q", got, tc.want)
			}
			if g.def.cache == nil {
				t.Error("no decision cache")
			}
		})
	}
}

func TestDecisionCacheDisabledByConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package tollgate.authz\nallow if input.identity.type == \"jwt\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := build(t.Context(), Config{Paths: []string{dir}, DecisionCache: DecisionCacheConfig{Disabled: true}}.withDefaults(), nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if g.def.cache != nil {
		t.Error("decision cache built although disabled")
	}
}
