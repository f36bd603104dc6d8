package policy

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// decisionPolicy makes object decisions from headers, claims, the path,
// the method and data, so a cached decision that belonged to another
// request would show.
const decisionPolicy = `package tollgate.authz

default allow := {"allowed": false, "http_status": 403, "body": "denied"}

allow := {
	"allowed": true,
	"headers": {"x-roles": concat(",", sort(granted)), "x-tenant": input.identity.claims.tenant},
	"request_headers_to_remove": ["x-client"],
} if {
	count(granted) > 0
	input.parsed_path[0] == "api"
	input.attributes.request.http.headers["x-client"] != "blocked"
}

granted contains role if {
	some role in input.identity.claims.roles
	role in data.grants[input.attributes.request.http.method]
}
`

const decisionData = `{"grants": {"GET": ["reader", "writer"], "POST": ["writer"]}}`

func decisionMatrix() []*Input {
	var ins []*Input
	for _, method := range []string{"GET", "POST", "DELETE"} {
		for _, path := range []string{"/api/orders", "/api", "/other", "/api/orders?page=2"} {
			for _, roles := range []string{`[]`, `["reader"]`, `["writer","reader"]`, `"reader"`} {
				for _, client := range []string{"web", "blocked"} {
					for _, tenant := range []string{"acme", "globex"} {
						claims := fmt.Sprintf(`{"roles":%s,"tenant":%q,"jti":"%s-%s"}`, roles, tenant, method, path)
						ins = append(ins, &Input{
							Check:    envoyRequest(method, path, map[string]string{"x-client": client, "x-request-id": path + client}),
							Identity: jwtIdentity("alice", claims),
							Service:  Service{Name: "orders"},
						})
					}
				}
			}
		}
	}
	return ins
}

// Every decision served from the cache is the one evaluation makes.
func TestDecisionCacheAgreesWithEvaluation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": decisionPolicy, "data.json": decisionData})
	reg := prometheus.NewRegistry()
	cached := newEngine(t, Config{Paths: []string{dir}}, WithRegisterer(reg))
	plain := newEngine(t, Config{Paths: []string{dir}, DecisionCache: DecisionCacheConfig{Disabled: true}})
	if cached.cur.Load().def.cache == nil {
		t.Fatalf("policy not cacheable: %s", cached.cur.Load().def.deps)
	}
	ins := decisionMatrix()
	allowed := 0
	for pass := range 3 {
		for i, in := range ins {
			want, werr := plain.Eval(t.Context(), in)
			got, gerr := cached.Eval(t.Context(), in)
			if werr != nil || gerr != nil {
				t.Fatalf("request %d: errors %v / %v", i, werr, gerr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("pass %d request %d: cached engine says %+v, evaluation %+v", pass, i, got, want)
			}
			if pass == 0 && got.Allowed {
				allowed++
			}
		}
	}
	if allowed == 0 || allowed == len(ins) {
		t.Fatalf("%d of %d allowed: the matrix does not exercise both decisions", allowed, len(ins))
	}
	hits, misses := counter(t, cached.metrics.cacheHits), counter(t, cached.metrics.cacheMisses)
	// Requests differing only in x-request-id, jti or the query string
	// share a key: the policy reads none of them.
	if misses >= float64(len(ins)) || hits+misses != float64(3*len(ins)) {
		t.Errorf("hits %v misses %v over %d evaluations of %d requests", hits, misses, 3*len(ins), len(ins))
	}
	if n := cached.cachedDecisions(); n != misses {
		t.Errorf("cached decisions = %v; want one per miss (%v)", n, misses)
	}
}

func TestDecisionCacheIsBounded(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{
		Paths:         []string{policyDir(t, "package tollgate.authz\nallow if startswith(input.parsed_path[0], \"ok\")\n")},
		DecisionCache: DecisionCacheConfig{MaxEntries: 32},
	})
	for i := range 2000 {
		path := fmt.Sprintf("/%s%d", []string{"ok", "no"}[i%2], i%500)
		res, err := e.Eval(t.Context(), &Input{Check: envoyRequest("GET", path, nil)})
		if err != nil || res.Allowed != (i%2 == 0) {
			t.Fatalf("%s: %+v, %v", path, res, err)
		}
	}
	if n := e.cachedDecisions(); n == 0 || n > 32 {
		t.Errorf("cached decisions = %v; want 1..32", n)
	}
}

// Errors and timeouts are not cached: the next request evaluates again.
func TestDecisionCacheSkipsErrors(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{Paths: []string{policyDir(t, `package tollgate.authz
allow := true if input.parsed_path[0] == "boom"
allow := false if input.parsed_path[0] == "boom"
`)}})
	for range 3 {
		if _, err := e.Eval(t.Context(), &Input{Check: envoyRequest("GET", "/boom", nil)}); reason.Of(err) != reason.PolicyError {
			t.Fatalf("Eval error = %v; want policy_error", err)
		}
	}
	if n, hits := e.cachedDecisions(), counter(t, e.metrics.cacheHits); n != 0 || hits != 0 {
		t.Errorf("after errors: %v cached, %v hits", n, hits)
	}
}

// A reload starts with an empty cache: the new policy decides.
func TestDecisionCacheEndsWithItsPolicy(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, "package tollgate.authz\nallow if input.attributes.request.http.method == \"GET\"\n")
	e := newEngine(t, Config{Paths: []string{dir}})
	in := &Input{Check: envoyRequest("GET", "/", nil)}
	for range 2 {
		if res, _ := e.Eval(t.Context(), in); !res.Allowed {
			t.Fatal("GET denied by the first policy")
		}
	}
	writeFiles(t, dir, map[string]string{"policy.rego": "package tollgate.authz\nallow if input.attributes.request.http.method == \"POST\"\n"})
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.Eval(t.Context(), in); res.Allowed {
		t.Error("GET still allowed after a reload that forbids it")
	}
}

func TestDecisionCacheCollisionIsAMiss(t *testing.T) {
	c := newDecisionCache(16, DefaultDecisionCacheBytes)
	c.put([]byte("a"), Result{Defined: true, Allowed: true})
	if res, ok := c.get([]byte("a")); !ok || !res.Allowed {
		t.Fatalf("get(a) = %+v, %v", res, ok)
	}
	// Plant "a"'s entry under "b"'s hash, as a collision would.
	h := maphash.Bytes(c.seed, []byte("b"))
	s := &c.shards[h%decisionShards]
	s.m[h] = &decisionEntry{key: "a", hash: h, res: Result{Defined: true, Allowed: true}}
	if res, ok := c.get([]byte("b")); ok {
		t.Errorf("get(b) = %+v from a colliding entry", res)
	}
}

func TestDecisionCacheCLOCKKeepsUsedEntries(t *testing.T) {
	c := newDecisionCache(decisionShards*4, DefaultDecisionCacheBytes)
	// Fill one shard, use all but one entry, then add: the unused one goes.
	var keys []string
	shard := -1
	for i := 0; len(keys) < 5; i++ {
		k := fmt.Sprintf("k%d", i)
		sh := int(maphash.Bytes(c.seed, []byte(k)) % decisionShards)
		if shard == -1 {
			shard = sh
		}
		if sh == shard {
			keys = append(keys, k)
		}
	}
	for _, k := range keys[:4] {
		c.put([]byte(k), Result{Defined: true})
	}
	for _, k := range []string{keys[0], keys[2], keys[3]} {
		c.get([]byte(k))
	}
	c.put([]byte(keys[4]), Result{Defined: true})
	var kept []string
	for _, k := range keys {
		if _, ok := c.get([]byte(k)); ok {
			kept = append(kept, k)
		}
	}
	if want := []string{keys[0], keys[2], keys[3], keys[4]}; strings.Join(kept, ",") != strings.Join(want, ",") {
		t.Errorf("kept %v; want %v", kept, want)
	}
}

// A request that cannot be input is a 400 whatever the policy reads, and
// a cached decision for a good request must not answer it.
func TestDecisionCacheNeverAnswersBadRequests(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Config{Paths: []string{policyDir(t, "package tollgate.authz\nallow if input.attributes.request.http.method == \"POST\"\n")}})
	good := envoyRequest("POST", "/a", map[string]string{"content-type": "application/json"})
	good.Attributes.Request.Http.Body = `{"ok":true}`
	badPath := envoyRequest("POST", "/a%zz", nil)
	badQuery := envoyRequest("POST", "/a?x=%zz", nil)
	badBody := envoyRequest("POST", "/a", map[string]string{"content-type": "application/json"})
	badBody.Attributes.Request.Http.Body = `{"ok":`
	for range 2 {
		if res, err := e.Eval(t.Context(), &Input{Check: good}); err != nil || !res.Allowed {
			t.Fatalf("good request: %+v, %v", res, err)
		}
	}
	for name, req := range map[string]*authv3.CheckRequest{"path": badPath, "query": badQuery, "body": badBody} {
		res, err := e.Eval(t.Context(), &Input{Check: req})
		if err != nil || res.Allowed || res.HTTPStatus != http.StatusBadRequest {
			t.Errorf("bad %s: %+v, %v; want a 400 deny", name, res, err)
		}
	}
}

func TestDecisionCacheBytesBound(t *testing.T) {
	const maxBytes = 64 << 10
	c := newDecisionCache(1_000_000, maxBytes)
	body := strings.Repeat("b", 1000)
	for i := range 5000 {
		c.put(fmt.Appendf(nil, "key-%d", i), Result{Defined: true, Body: body, Headers: []Header{{Key: "x-a", Value: "1"}}})
	}
	if n, b := c.size(); b > maxBytes || n < 16 || int64(n)*1000 > maxBytes {
		t.Errorf("after 5000 decisions of ~1.2 KB: %d bytes in %d entries; want at most %d bytes", b, n, maxBytes)
	}
	// A decision larger than a shard's share is not cached at all.
	c.put([]byte("huge"), Result{Defined: true, Body: strings.Repeat("h", maxBytes)})
	if _, ok := c.get([]byte("huge")); ok {
		t.Error("a decision larger than the bound was cached")
	}
}

// Concurrent Checks on a cache small enough to evict all the time still
// get their own decisions (run with -race).
func TestDecisionCacheConcurrentEviction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": decisionPolicy, "data.json": decisionData})
	cached := newEngine(t, Config{Paths: []string{dir}, DecisionCache: DecisionCacheConfig{MaxEntries: 16}})
	plain := newEngine(t, Config{Paths: []string{dir}, DecisionCache: DecisionCacheConfig{Disabled: true}})
	ins := decisionMatrix()
	want := make([]Result, len(ins))
	for i, in := range ins {
		var err error
		if want[i], err = plain.Eval(t.Context(), in); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for n := range 600 {
				i := (n*7 + w*13) % len(ins)
				got, err := cached.Eval(t.Context(), ins[i])
				if err != nil || !reflect.DeepEqual(got, want[i]) {
					t.Errorf("request %d: %+v, %v; want %+v", i, got, err, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	if n := cached.cachedDecisions(); n > 16 {
		t.Errorf("cached decisions = %v; want ≤ 16", n)
	}
}
