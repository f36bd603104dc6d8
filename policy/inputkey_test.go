package policy

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policy/internal/envoyinput"
)

// keyInputs are requests of every shape the key lookup distinguishes.
func keyInputs(t *testing.T) map[string]*Input {
	t.Helper()
	id := jwtIdentity("alice", `{"iss":"https://idp.example.com","sub":"alice","roles":["a","b"],
		"tenant":"acme","n":3,"f":1.5,"ok":true,"nil":null,"nested":{"x":{"y":["z",1,{"k":"v"}]}}}`)
	jsonBody := envoyRequest("POST", "/api/orders?x=1&x=2&y", map[string]string{
		"content-type": "application/json", "authorization": "Bearer a.b.c", "cookie": "sid=1; theme=dark",
	})
	jsonBody.Attributes.Request.Http.Body = `{"item":{"id":7,"tags":["t"]},"qty":2}`
	form := envoyRequest("POST", "/form", map[string]string{"content-type": "application/x-www-form-urlencoded"})
	form.Attributes.Request.Http.Body = "a=1&a=2&b=3"
	principal := envoyRequest("GET", "/", nil)
	principal.Attributes.Source.Principal = "spiffe://cluster.local/ns/shop/sa/web"
	principal.Attributes.ContextExtensions = map[string]string{"tier": "gold"}
	return map[string]*Input{
		"golden":       {Check: golden(t, "checkrequest.json"), Identity: id, Service: Service{Name: "orders", Audiences: []string{"orders-api"}}},
		"json body":    {Check: jsonBody, Identity: id, Service: Service{Name: "orders"}},
		"form body":    {Check: form, Identity: Identity{Type: IdentitySession, Subject: "bob"}},
		"principal":    {Check: principal},
		"no http":      {Check: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}},
		"no request":   {},
		"escaped path": {Check: envoyRequest("GET", "/a%2Fb//c/%7E?q=%20", nil), Identity: Identity{Type: IdentityAnonymous}},
	}
}

// paths lists every path of doc down to depth 6, plus paths that are
// absent below each of them.
func allPaths(v ast.Value, prefix []string, out *[][]string) {
	*out = append(*out, slices.Clone(prefix), append(slices.Clone(prefix), "absent"))
	if len(prefix) == 6 {
		return
	}
	switch v := v.(type) {
	case ast.Object:
		for _, k := range v.Keys() {
			if s, ok := k.Value.(ast.String); ok {
				allPaths(v.Get(k).Value, append(slices.Clone(prefix), string(s)), out)
			}
		}
	case *ast.Array:
		// A string key into an array is undefined.
		*out = append(*out, append(slices.Clone(prefix), "0"))
	case ast.String:
		*out = append(*out, append(slices.Clone(prefix), "x"))
	}
}

// TestAppendKeyMatchesInput checks the key's lookups against the input
// document itself: for every path of every request, the lookup finds a
// value exactly where the document has one, and the same value.
func TestAppendKeyMatchesInput(t *testing.T) {
	for name, in := range keyInputs(t) {
		for _, redact := range []bool{true, false} {
			doc, err := buildInput(in, redact)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var paths [][]string
			allPaths(doc, nil, &paths)
			paths = append(paths, []string{"attributes", "request", "http", "headers", "authorization"},
				[]string{"attributes", "request", "http", "headers", "cookie", "x"},
				[]string{"attributes", "request", "http", "method", "x"})
			var sec inputSections
			for _, p := range paths {
				if len(p) == 0 {
					continue
				}
				ref := ast.Ref{ast.InputRootDocument}
				for _, s := range p {
					ref = append(ref, ast.StringTerm(s))
				}
				want, ferr := doc.Find(ref[1:])
				got, found, err := sec.lookup(in, p, redact)
				if err != nil {
					t.Fatalf("%s %v: %v", name, p, err)
				}
				if found != (ferr == nil) {
					t.Errorf("%s redact=%v %s: found %v, document has it: %v", name, redact, ref, found, ferr == nil)
					continue
				}
				if !found {
					continue
				}
				gv, err := ast.InterfaceToValue(got)
				if err != nil {
					t.Fatalf("%s %s: %v", name, ref, err)
				}
				if gv.Compare(want) != 0 {
					t.Errorf("%s redact=%v %s = %v, document has %v", name, redact, ref, gv, want)
				}
			}
		}
	}
}

// Keys of equal values are equal however the values were built; keys of
// different values differ, whatever the type.
func TestAppendValueDistinguishesValues(t *testing.T) {
	num := func(s string) any { return json.Number(s) }
	values := []any{
		nil, true, false, "", "a", "ab", "s", []string{}, []string{"a", "b"}, []string{"ab"}, []any{"a", "b"},
		[]any{"ab", ""}, num("1"), num("12"), float64(1), int64(1), uint64(1), int64(-1),
		map[string]any{}, map[string]any{"a": "b"}, map[string]any{"a": []any{"b"}}, map[string]any{"ab": ""},
		map[string]string{"a": "b", "c": "d"}, map[string]any{"a": "b", "c": "e"},
		map[string]any{"s": strings.Repeat("s", 115)}, []any{nil}, []any{[]any{}},
	}
	// []string and []any of the same strings, and map[string]string and
	// map[string]any of the same strings, are the same Rego value.
	same := map[[2]int]bool{{8, 10}: true}
	keys := make([][]byte, len(values))
	for i, v := range values {
		k, ok := appendValue(nil, v)
		if !ok {
			t.Fatalf("appendValue(%#v) not ok", v)
		}
		keys[i] = k
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if eq := bytes.Equal(keys[i], keys[j]); eq != same[[2]int{i, j}] {
				t.Errorf("key(%#v) == key(%#v): %v", values[i], values[j], eq)
			}
		}
	}
	a, _ := appendValue(nil, map[string]any{"x": "1", "y": []any{"2"}, "z": map[string]any{"k": true}})
	b, _ := appendValue(nil, map[string]any{"z": map[string]any{"k": true}, "y": []string{"2"}, "x": "1"})
	if !bytes.Equal(a, b) {
		t.Error("equal objects built in another order have different keys")
	}
	if _, ok := appendValue(nil, struct{}{}); ok {
		t.Error("an unknown type was encoded")
	}
}

func TestAppendKeyBounds(t *testing.T) {
	key := func(in *Input, paths [][]string) bool {
		vals, ok := lookupAll(nil, in, paths, true)
		if !ok {
			return false
		}
		_, ok = appendKey(nil, vals)
		return ok
	}
	in := &Input{Check: envoyRequest("GET", "/", map[string]string{"x-big": strings.Repeat("b", maxKeyBytes)})}
	if key(in, [][]string{{"attributes", "request", "http", "headers"}}) {
		t.Error("a key longer than maxKeyBytes was built")
	}
	bad := &Input{Check: envoyRequest("GET", "/%zz", nil)}
	if key(bad, [][]string{{"parsed_path"}}) {
		t.Error("a key was built for a path that cannot be input")
	}
}

// A query that reads only known paths is evaluated on the input reduced to
// them: its decisions must be those of the whole document.
func TestMinimalInputDecidesLikeTheWholeInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": decisionPolicy, "data.json": decisionData})
	for name, paths := range map[string][]string{
		"decision objects": {dir},
		"rbac example":     {filepath.Join(examples, "rbac")},
		"tenant example":   {filepath.Join(examples, "tenant")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, Config{Paths: paths, DecisionCache: DecisionCacheConfig{Disabled: true}})
			q := e.cur.Load().def
			if q.deps.Uncacheable != "" {
				t.Fatalf("deps unknown: %s", q.deps.Uncacheable)
			}
			ins := decisionMatrix()
			for _, p := range []string{"/api/orders", "/tenants/acme/orders", "/healthz", "/admin/users/7"} {
				for _, roles := range []string{`["orders.reader"]`, `["admin"]`, `"openid orders.writer"`} {
					ins = append(ins, &Input{
						Check:    envoyRequest("GET", p, nil),
						Identity: jwtIdentity("alice", `{"roles":`+roles+`,"tenant":"acme"}`),
					}, &Input{Check: envoyRequest("POST", p, nil)})
				}
			}
			allowed := 0
			for i, in := range ins {
				got, gerr := e.Eval(t.Context(), in)
				whole, err := buildInput(in, true)
				if err != nil {
					t.Fatal(err)
				}
				want, werr := q.eval(t.Context(), whole, 5*time.Second)
				if (gerr != nil) != (werr != nil) || !reflect.DeepEqual(got, want) {
					t.Fatalf("request %d: reduced input %+v, %v; whole input %+v, %v", i, got, gerr, want, werr)
				}
				if got.Allowed {
					allowed++
				}
			}
			if allowed == 0 {
				t.Error("nothing allowed: the comparison is vacuous")
			}
		})
	}
}

// The decision cache checks each request with CheckPathAndQuery and parses
// only what the policy reads: it must refuse exactly what PathAndQuery
// refuses.
func TestCheckPathAndQueryAgrees(t *testing.T) {
	paths := []string{
		"/", "", "/a/b", "/a%2Fb", "/a%zz", "/%", "/a%2", "/a+b", "/a?", "/a?x", "/a?x=1&y=2", "/a?x=%zz", "/a?%zz=1",
		"/a?x=1;y=2", "/a?x;y", "/a?&&x=1&", "/a?x=%", "/a?x=a+b%20c", "/a?=1", "/a?x==", "/%7E?q=%2", "/a?x=1?y=2", "/ä?ü=ö",
	}
	// And every short string over the characters that matter.
	alphabet := []byte("/?%2fz=&;+a")
	var gen func(prefix []byte, n int)
	gen = func(prefix []byte, n int) {
		paths = append(paths, string(prefix))
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c), n-1)
		}
	}
	gen(nil, 4)
	for _, p := range paths {
		_, _, perr := envoyinput.PathAndQuery(p)
		cerr := envoyinput.CheckPathAndQuery(p)
		if (perr == nil) != (cerr == nil) {
			t.Errorf("%q: PathAndQuery error %v, CheckPathAndQuery error %v", p, perr, cerr)
		}
	}
}
