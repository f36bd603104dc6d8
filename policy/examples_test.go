package policy

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// The example policies' own Rego tests pass under OPA's tester.
func TestExamplePoliciesRegoTests(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"rbac", "tenant", "envoy"} {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			ok, err := Test(t.Context(), &out, []string{filepath.Join(examples, dir)}, TestOptions{Verbose: true})
			if err != nil || !ok {
				t.Fatalf("Test(%s) = %v, %v; want true, nil\n%s", dir, ok, err, out.String())
			}
			if !strings.Contains(out.String(), "PASS") {
				t.Errorf("report has no PASS line:\n%s", out.String())
			}
		})
	}
}

// The example policies decide Envoy-shaped CheckRequests through
// Engine.Eval as their Rego tests say they should.
func TestExamplePoliciesDecisions(t *testing.T) {
	t.Parallel()
	reader := jwtIdentity("alice", `{"roles":["orders.reader"],"tenant":"acme"}`)
	writer := jwtIdentity("bob", `{"roles":"openid orders.writer","tenant":"acme"}`)
	admin := jwtIdentity("root", `{"roles":["admin","platform-admin"],"tenant":"ops"}`)
	anon := Identity{Type: IdentityAnonymous}
	mtls := func(method, path, principal, ip string) *authv3.CheckRequest {
		r := envoyRequest(method, path, nil)
		r.Attributes.Source.Principal = principal
		r.Attributes.Source.Address.GetSocketAddress().Address = ip
		return r
	}
	const orders = "spiffe://cluster.local/ns/shop/sa/orders"
	tests := []struct {
		name    string
		dir     string
		query   string
		check   *authv3.CheckRequest
		id      Identity
		allowed bool
		status  int
		headers []Header
	}{
		{name: "rbac: reader lists orders → allow", dir: "rbac", check: envoyRequest("GET", "/api/orders?limit=10", nil), id: reader, allowed: true},
		{name: "rbac: reader reads a percent-encoded id → allow", dir: "rbac", check: envoyRequest("GET", "/api/orders/A%2F1", nil), id: reader, allowed: true},
		{name: "rbac: reader creates → deny", dir: "rbac", check: envoyRequest("POST", "/api/orders", nil), id: reader},
		{name: "rbac: writer (roles as a string) creates → allow", dir: "rbac", check: envoyRequest("POST", "/api/orders", nil), id: writer, allowed: true},
		{name: "rbac: writer deletes → deny", dir: "rbac", check: envoyRequest("DELETE", "/api/orders/42", nil), id: writer},
		{name: "rbac: admin deletes → allow", dir: "rbac", check: envoyRequest("DELETE", "/api/orders/42", nil), id: admin, allowed: true},
		{name: "rbac: anonymous health check → allow", dir: "rbac", check: envoyRequest("GET", "/healthz", nil), id: anon, allowed: true},
		{name: "rbac: anonymous orders → deny", dir: "rbac", check: envoyRequest("GET", "/api/orders", nil), id: anon},
		{name: "tenant: own tenant → allow with x-tenant-id", dir: "tenant", check: envoyRequest("GET", "/tenants/acme/invoices", nil), id: reader, allowed: true, headers: []Header{{"x-tenant-id", "acme"}}},
		{name: "tenant: other tenant → 403 with body", dir: "tenant", check: envoyRequest("GET", "/tenants/globex/invoices", nil), id: reader, status: 403, headers: []Header{{"content-type", "application/json"}}},
		{name: "tenant: platform admin → allow", dir: "tenant", check: envoyRequest("GET", "/tenants/globex/x", nil), id: admin, allowed: true, headers: []Header{{"x-tenant-id", "globex"}}},
		{name: "tenant: anonymous → 403", dir: "tenant", check: envoyRequest("GET", "/tenants/acme/x", nil), id: anon, status: 403, headers: []Header{{"content-type", "application/json"}}},
		{name: "envoy: anyone reads products → allow", dir: "envoy", query: "data.envoy.authz.allow", check: envoyRequest("GET", "/products/1", nil), id: anon, allowed: true},
		{name: "envoy: orders workload writes → allow", dir: "envoy", query: "data.envoy.authz.allow", check: mtls("PUT", "/products/1", orders, "10.1.1.1"), id: anon, allowed: true},
		{name: "envoy: other workload writes → deny", dir: "envoy", query: "data.envoy.authz.allow", check: mtls("PUT", "/products/1", "spiffe://x/y", "10.1.1.1"), id: anon},
		{name: "envoy: health from cluster → allow", dir: "envoy", query: "data.envoy.authz.allow", check: mtls("GET", "/healthz", "", "10.2.3.4"), id: anon, allowed: true},
		{name: "envoy: health from outside → deny", dir: "envoy", query: "data.envoy.authz.allow", check: mtls("GET", "/healthz", "", "192.0.2.1"), id: anon},
	}
	engines := map[string]*Engine{}
	for _, dir := range []string{"rbac", "tenant", "envoy"} {
		q := ""
		if dir == "envoy" {
			q = "data.envoy.authz.allow"
		}
		engines[dir] = newEngine(t, Config{Paths: []string{filepath.Join(examples, dir)}, Query: q})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := engines[tt.dir].Eval(t.Context(), &Input{Check: tt.check, Identity: tt.id, Service: Service{Name: "orders"}})
			if err != nil {
				t.Fatalf("Eval = %v", err)
			}
			if !res.Defined || res.Allowed != tt.allowed || res.HTTPStatus != tt.status {
				t.Errorf("Eval = %+v; want defined, allowed %v, status %d", res, tt.allowed, tt.status)
			}
			if tt.headers != nil && !slices.Equal(res.Headers, tt.headers) {
				t.Errorf("Eval headers = %v; want %v", res.Headers, tt.headers)
			}
		})
	}
}

// An OPA-Envoy policy, queried at data.envoy.authz.allow, decides the
// golden CheckRequest (protojson, as Envoy sends it) unchanged.
func TestEnvoyPolicyOnGoldenCheckRequest(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "GET"
	input.parsed_path == ["api", "orders", "42"]
	input.parsed_query.expand == ["items", "customer"]
	http_request.headers[":authority"] == "orders.example.com"
	input.attributes.source.address.socketAddress.address == "10.244.1.17"
	input.attributes.source.address.socketAddress.portValue == 51234
	input.attributes.destination.principal == "spiffe://cluster.local/ns/shop/sa/orders"
	input.attributes.metadataContext.filterMetadata["envoy.filters.http.header_to_metadata"].plan == "gold"
	input.attributes.contextExtensions.virtual_host == "orders"
	input.attributes.tlsSession.sni == "orders.example.com"
	input.attributes.request.time.seconds > 0
	input.version == {"ext_authz": "v3", "encoding": "protojson"}
	input.source_principal == "spiffe://cluster.local/ns/shop/sa/web"
	input.parsed_body == null
	input.truncated_body == false
}
`)
	e := newEngine(t, Config{Paths: []string{dir}, Query: "data.envoy.authz.allow"})
	res, err := e.Eval(t.Context(), &Input{Check: golden(t, "checkrequest.json")})
	if err != nil || !res.Allowed {
		t.Fatalf("Eval(golden) = %+v, %v; want allowed", res, err)
	}
}
