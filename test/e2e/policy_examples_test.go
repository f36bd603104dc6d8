package e2e

import (
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// examplesDir holds the example policies shipped in deploy/policies.
const examplesDir = "../../deploy/policies/"

// TestPolicyExamples runs each example policy of deploy/policies in the
// real binary, loaded from a copy of its directory through policy.paths,
// and checks the allow/deny matrix its README and Rego tests describe.
func TestPolicyExamples(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-examples")
	p := newIDP(t, 300, key)
	// mint returns a token for sub, without roles unless set adds them.
	mint := func(t *testing.T, sent *sentTokens, sub string, set claims) string {
		t.Helper()
		tok := sign(t, key, validClaims(p.issuer()).with(claims{"sub": sub, "roles": nil}).with(set), nil)
		sent.add(tok)
		return tok
	}
	// run starts tollgate on a copy of the example, sends the cases, then
	// checks that its logs hold none of the tokens.
	run := func(t *testing.T, example string, svc polService, cases func(t *testing.T, sent *sentTokens) []polCase, extra ...string) {
		t.Helper()
		dir := polCopyDir(t, examplesDir+example)
		tg := startTollgate(t, polConfig(p, "info", []polService{svc}, polSection([]string{dir}, extra...)))
		var sent sentTokens
		cs := cases(t, &sent)
		t.Run("cases", func(t *testing.T) { polRunCases(t, tg, "pol-"+example, cs) })
		t.Run("logs never contain a token", func(t *testing.T) { assertNoTokenInLogs(t, tg.stderr.String(), sent.all()) })
	}

	t.Run("rbac", func(t *testing.T) {
		t.Parallel()
		const host = "api.example.com"
		// auth optional: public routes need no identity at all.
		run(t, "rbac", polService{name: "api", host: host, auth: "optional"}, func(t *testing.T, sent *sentTokens) []polCase {
			var (
				reader = mint(t, sent, "rita", claims{"roles": []string{"orders.reader"}})
				writer = mint(t, sent, "will", claims{"roles": []string{"orders.writer"}})
				admin  = mint(t, sent, "ada", claims{"roles": []string{"admin"}})
				spaced = mint(t, sent, "sam", claims{"roles": "openid orders.reader"})
				none   = mint(t, sent, "nora", nil)
			)
			req := func(method, path, tok string) polReq {
				return polReq{host: host, method: method, path: path, token: tok}
			}
			ok := func(sub, roles string) polOutcome {
				return polOutcome{code: codes.OK, set: map[string]string{"x-user-id": sub, "x-user-roles": roles}, remove: []string{"authorization"}}
			}
			anonymousOK := polOutcome{code: codes.OK, remove: []string{"x-user-id", "x-user-roles"}, absent: []string{"x-user-id", "x-user-roles"}}
			forbidden := polDenied(http.StatusForbidden)
			return []polCase{
				{name: "orders.reader GET /api/orders → allowed", req: req("GET", "/api/orders", reader), want: ok("rita", "orders.reader")},
				{name: "orders.reader GET /api/orders/42 → allowed", req: req("GET", "/api/orders/42", reader), want: ok("rita", "orders.reader")},
				{name: "orders.reader HEAD /api/orders/42?expand=items → allowed (query ignored)", req: req("HEAD", "/api/orders/42?expand=items", reader), want: ok("rita", "orders.reader")},
				{name: "orders.reader GET percent-encoded /api/%6Frders/42 → allowed (policy sees the decoded path)", req: req("GET", "/api/%6Frders/42", reader), want: ok("rita", "orders.reader")},
				{name: "orders.reader POST /api/orders → 403", req: req("POST", "/api/orders", reader), want: forbidden},
				{name: "orders.writer POST /api/orders → allowed", req: req("POST", "/api/orders", writer), want: ok("will", "orders.writer")},
				{name: "orders.writer PATCH /api/orders/42 → allowed", req: req("PATCH", "/api/orders/42", writer), want: ok("will", "orders.writer")},
				{name: "orders.writer PUT /api/orders/42/items → 403 (one segment only)", req: req("PUT", "/api/orders/42/items", writer), want: forbidden},
				{name: "orders.writer DELETE /api/orders/42 → 403", req: req("DELETE", "/api/orders/42", writer), want: forbidden},
				{name: "admin DELETE /api/orders/42 → allowed", req: req("DELETE", "/api/orders/42", admin), want: ok("ada", "admin")},
				{name: "admin PUT /admin/users/7 → allowed (any method)", req: req("PUT", "/admin/users/7", admin), want: ok("ada", "admin")},
				{name: "orders.writer GET /admin → 403", req: req("GET", "/admin", writer), want: forbidden},
				{name: "roles as a space-separated string → allowed", req: req("GET", "/api/orders", spaced), want: ok("sam", "openid orders.reader")},
				{name: "token without roles GET /api/orders → 403", req: req("GET", "/api/orders", none), want: forbidden},
				{name: "admin GET /api/payments (no route) → 403", req: req("GET", "/api/payments", admin), want: forbidden},
				{name: "anonymous GET /healthz (public) → allowed, identity headers removed", req: req("GET", "/healthz", ""), want: anonymousOK},
				{name: "anonymous GET /docs/api/index.html (public) → allowed", req: req("GET", "/docs/api/index.html", ""), want: anonymousOK},
				{name: "anonymous with forged x-user-id on a public route → allowed, header removed", req: polReq{host: host, method: "GET", path: "/healthz", headers: map[string]string{"x-user-id": "ada"}}, want: anonymousOK},
				{name: "token holder GET /healthz (public) → allowed with identity headers", req: req("GET", "/healthz", none), want: polOutcome{code: codes.OK, set: map[string]string{"x-user-id": "nora"}}},
				{name: "anonymous POST /healthz (public is read-only) → 401 asking for a credential", req: req("POST", "/healthz", ""), want: polCredentialMissing},
				{name: "anonymous GET /api/orders → 401 asking for a credential", req: req("GET", "/api/orders", ""), want: polCredentialMissing},
			}
		})
	})

	t.Run("tenant", func(t *testing.T) {
		t.Parallel()
		const host = "tenants.example.com"
		run(t, "tenant", polService{name: "tenants", host: host, auth: "required"}, func(t *testing.T, sent *sentTokens) []polCase {
			var (
				acme        = mint(t, sent, "alice", claims{"tenant": "acme"})
				noTenant    = mint(t, sent, "nobody", nil)
				emptyTenant = mint(t, sent, "empty", claims{"tenant": ""})
				platform    = mint(t, sent, "pat", claims{"tenant": "acme", "roles": []string{"platform-admin"}})
			)
			req := func(path, tok string, headers map[string]string) polReq {
				return polReq{host: host, method: "GET", path: path, token: tok, headers: headers}
			}
			ok := func(sub, tenant string) polOutcome {
				return polOutcome{
					code:   codes.OK,
					set:    map[string]string{"x-tenant-id": tenant, "x-user-id": sub},
					remove: []string{"x-tenant-override", "authorization"},
				}
			}
			mismatch := polOutcome{
				code: codes.PermissionDenied, reason: "policy_denied", http: http.StatusForbidden,
				body: `{"error":"tenant_mismatch"}`,
				set:  map[string]string{"content-type": "application/json"},
			}
			return []polCase{
				{name: "own tenant → allowed with x-tenant-id, x-tenant-override removed", req: req("/tenants/acme/invoices", acme, nil), want: ok("alice", "acme")},
				{name: "client-sent x-tenant-id → overwritten by the policy's", req: req("/tenants/acme/invoices", acme, map[string]string{"x-tenant-id": "globex", "x-tenant-override": "globex"}), want: ok("alice", "acme")},
				{name: "other tenant → 403 with the policy's JSON body", req: req("/tenants/globex/invoices", acme, nil), want: mismatch},
				{name: "token without tenant claim → 403", req: req("/tenants/acme/invoices", noTenant, nil), want: mismatch},
				{name: "path outside /tenants → 403", req: req("/invoices", acme, nil), want: mismatch},
				{name: "empty tenant segment and empty claim → 403", req: req("/tenants//invoices", emptyTenant, nil), want: mismatch},
				{name: "platform-admin → any tenant, x-tenant-id of the path", req: req("/tenants/globex/invoices", platform, nil), want: ok("pat", "globex")},
				{name: "no token → 401 before the policy runs", req: req("/tenants/acme/invoices", "", nil), want: polOutcome{
					code: codes.Unauthenticated, reason: "credential_missing", http: http.StatusUnauthorized, errText: "credential missing",
				}},
			}
		})
	})

	t.Run("envoy", func(t *testing.T) {
		t.Parallel()
		const (
			host   = "catalogue.example.com"
			orders = "spiffe://cluster.local/ns/shop/sa/orders"
			web    = "spiffe://cluster.local/ns/shop/sa/web"
		)
		run(t, "envoy", polService{name: "catalogue", host: host, auth: "optional"}, func(t *testing.T, sent *sentTokens) []polCase {
			user := mint(t, sent, "alice", nil)
			req := func(method, path, principal, ip, tok string) polReq {
				return polReq{host: host, method: method, path: path, principal: principal, ip: ip, token: tok}
			}
			anonymousOK := polOutcome{code: codes.OK, remove: []string{"x-user-id"}, absent: []string{"x-user-id"}}
			return []polCase{
				{name: "anonymous GET /products/42 from outside → allowed", req: req("GET", "/products/42", "", "203.0.113.9", ""), want: anonymousOK},
				{name: "anonymous HEAD /products → allowed", req: req("HEAD", "/products", "", "203.0.113.9", ""), want: anonymousOK},
				{name: "orders workload PUT /products/42 → allowed", req: req("PUT", "/products/42", orders, "10.1.2.3", user), want: polAllow(map[string]string{"x-user-id": "alice"})},
				{name: "orders workload DELETE /products/42 → allowed", req: req("DELETE", "/products/42", orders, "10.1.2.3", user), want: polAllow(map[string]string{"x-user-id": "alice"})},
				{name: "web workload POST /products with a token → 403", req: req("POST", "/products", web, "10.1.2.3", user), want: polDenied(http.StatusForbidden)},
				{name: "web workload POST /products anonymous → 401 asking for a credential", req: req("POST", "/products", web, "10.1.2.3", ""), want: polCredentialMissing},
				{name: "GET /healthz from the cluster network → allowed", req: req("GET", "/healthz", "", "10.9.8.7", ""), want: anonymousOK},
				{name: "GET /healthz from outside with a token → 403", req: req("GET", "/healthz", "", "198.51.100.4", user), want: polDenied(http.StatusForbidden)},
				{name: "GET /admin by the orders workload → 403", req: req("GET", "/admin", orders, "10.1.2.3", user), want: polDenied(http.StatusForbidden)},
			}
		}, `query: "data.envoy.authz.allow"`)
	})
}

// TestPolicyEnvoyStyle serves an OPA-Envoy style policy through
// policy.query data.envoy.authz.allow (and a service whose policy_query is
// the plugin's decision object, data.envoy.authz.result), fed the
// CheckRequest of testdata/policy/envoy_checkrequest.json as Envoy sends
// it: peer principals, context extensions, metadata and the JSON body.
func TestPolicyEnvoyStyle(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-envoy-style")
	p := newIDP(t, 300, key)
	dir := polCopyDir(t, "testdata/policy/envoy_style")
	tg := startTollgate(t, polConfig(p, "debug", []polService{
		{name: "shop", host: "shop.example.com", auth: "optional"},
		{name: "shop-result", host: "result.example.com", auth: "optional", query: "data.envoy.authz.result"},
	}, polSection([]string{dir}, `query: "data.envoy.authz.allow"`)))
	var sent sentTokens
	tok := sign(t, key, validClaims(p.issuer()), nil)
	sent.add(tok)

	// envoy is the golden Envoy request with changes.
	envoy := func(change func(r *polReq)) polReq {
		r := polReq{envoy: true, token: tok}
		if change != nil {
			change(&r)
		}
		return r
	}
	plan := func(name string) func(*authv3.CheckRequest) {
		return func(req *authv3.CheckRequest) {
			md := req.GetAttributes().GetMetadataContext().GetFilterMetadata()["envoy.filters.http.header_to_metadata"]
			md.Fields["plan"] = structpb.NewStringValue(name)
		}
	}
	// get turns the request into a GET without a body, as Envoy sends it.
	get := func(path string, more func(*authv3.CheckRequest)) func(r *polReq) {
		return func(r *polReq) {
			r.method, r.path = "GET", path
			r.mutate = func(req *authv3.CheckRequest) {
				h := req.GetAttributes().GetRequest().GetHttp()
				h.Body, h.Size = "", 0
				delete(h.Headers, "content-type")
				delete(h.Headers, "content-length")
				if more != nil {
					more(req)
				}
			}
		}
	}
	alice := polAllow(map[string]string{"x-user-id": "alice"})
	forbidden := polDenied(http.StatusForbidden)
	cases := []polCase{
		{name: "Envoy's JSON POST, gold plan, quantity 3 → allowed", req: envoy(nil), want: alice},
		{name: "same request without a token → allowed as anonymous, identity headers removed", req: envoy(func(r *polReq) { r.token = "" }),
			want: polOutcome{code: codes.OK, remove: []string{"x-user-id", "x-user-roles"}, absent: []string{"x-user-id"}}},
		{name: "quantity 500 beyond the gold limit → 403", req: envoy(func(r *polReq) { r.body = `{"item":"sku-1","quantity":500}` }), want: forbidden},
		{name: "free plan in metadataContext, quantity 3 → 403", req: envoy(func(r *polReq) { r.mutate = plan("free") }), want: forbidden},
		{name: "free plan, quantity 1 → allowed", req: envoy(func(r *polReq) { r.mutate = plan("free"); r.body = `{"item":"sku-1","quantity":1}` }), want: alice},
		{name: "another workload's principal → 403", req: envoy(func(r *polReq) { r.principal = "spiffe://cluster.local/ns/shop/sa/batch" }), want: forbidden},
		{name: "parsed_query src=batch → 403", req: envoy(func(r *polReq) { r.path = "/shop/orders?src=batch" }), want: forbidden},
		{name: "body Envoy truncated (x-envoy-auth-partial-body) → 403, no parsed_body", req: envoy(func(r *polReq) {
			r.headers = map[string]string{"x-envoy-auth-partial-body": "true"}
		}), want: forbidden},
		{name: "JSON body that does not parse → 400 without evaluation", req: envoy(func(r *polReq) { r.body = `{"item":` }), want: polDenied(http.StatusBadRequest)},
		{name: "GET an item on virtual host shop over TLS → allowed", req: envoy(get("/items/7?view=summary", nil)), want: alice},
		{name: "GET an item from another virtual host (contextExtensions) → 403", req: envoy(get("/items/7", func(req *authv3.CheckRequest) {
			req.GetAttributes().ContextExtensions["virtual_host"] = "admin"
		})), want: forbidden},
		{name: "GET an item over plain HTTP (x-forwarded-proto) → 403", req: envoy(get("/items/7", func(req *authv3.CheckRequest) {
			req.GetAttributes().GetRequest().GetHttp().Headers["x-forwarded-proto"] = "http"
		})), want: forbidden},
		{name: "data.envoy.authz.result allowed → the plugin's headers upstream, the credential redacted",
			req:  envoy(func(r *polReq) { r.host = "result.example.com" }),
			want: polAllow(map[string]string{"x-ext-auth-allow": "yes", "x-saw-authorization": "[REDACTED]", "x-user-id": "alice"})},
		{name: "data.envoy.authz.result denied → the plugin's status, body and headers to the client",
			req: envoy(func(r *polReq) { r.host = "result.example.com"; r.body = `{"item":"sku-1","quantity":500}` }),
			want: polOutcome{
				code: codes.PermissionDenied, reason: "policy_denied", http: http.StatusForbidden, body: "Unauthorized Request",
				set: map[string]string{"x-ext-auth-allow": "no", "x-saw-authorization": "[REDACTED]"},
			}},
	}
	t.Run("cases", func(t *testing.T) { polRunCases(t, tg, "pol-envoy-style", cases) })

	t.Run("logs never contain the token", func(t *testing.T) {
		logs := tg.stderr.String()
		assertNoTokenInLogs(t, logs, sent.all())
		if !strings.Contains(logs, `"pol-envoy-style-02"`) {
			t.Errorf("logs mention pol-envoy-style-02 = false; want its deny line (guards against a vacuous pass)")
		}
	})
}
