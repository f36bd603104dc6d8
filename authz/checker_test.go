package authz

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/jwks"
)

// fakeVerifier maps raw tokens to results; it stands in for the JWKS
// verifier, which has its own tests against real JWKS servers.
type fakeVerifier struct {
	tokens map[string]*jwks.Token
	errs   map[string]error
	calls  atomic.Int64 // concurrent Checks share one
}

func (f *fakeVerifier) Verify(_ context.Context, raw string) (*jwks.Token, error) {
	f.calls.Add(1)
	if err, ok := f.errs[raw]; ok {
		return nil, err
	}
	if t, ok := f.tokens[raw]; ok {
		return t, nil
	}
	return nil, reason.New(reason.TokenSignature)
}

func tok(sub string, aud []string, claims map[string]any) *jwks.Token {
	c := map[string]any{"sub": sub, "iss": "https://idp.example.com"}
	for k, v := range claims {
		c[k] = v
	}
	return &jwks.Token{Issuer: "https://idp.example.com", Subject: sub, Audience: aud, Expiry: time.Now().Add(time.Hour), Claims: c}
}

func testChecker(t *testing.T, v TokenVerifier) *Checker {
	t.Helper()
	c, err := New(Config{
		Services: []Service{
			{Name: "orders", Hosts: []string{"orders.example.com"}, Audiences: []string{"orders-api"}},
			{Name: "orders-admin", Hosts: []string{"orders.example.com"}, PathPrefixes: []string{"/admin"}, Audiences: []string{"orders-admin"}},
			{Name: "public", Hosts: []string{"public.example.com"}, Auth: AuthOptional, Audiences: []string{"public"}},
			{Name: "open", Hosts: []string{"open.example.com"}, Auth: AuthNone},
			{Name: "noaud", Hosts: []string{"noaud.example.com"}},
		},
		ClaimHeaders:  []ClaimHeader{{Claim: "roles", Header: "x-user-roles"}, {Claim: "sub", Header: "x-user-id"}, {Claim: "tenant", Header: "x-tenant"}, {Claim: "org", Header: "x-org"}},
		RemoveHeaders: []string{"authorization"},
		MaxTokenBytes: 1024,
	}, v)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return c
}

func TestCheckDecisions(t *testing.T) {
	t.Parallel()
	v := &fakeVerifier{
		tokens: map[string]*jwks.Token{
			"good":       tok("alice", []string{"orders-api"}, map[string]any{"roles": []any{"admin", "reader"}, "tenant": "acme\r\nx-evil: 1", "org": map[string]any{"id": json.Number("7")}}),
			"admin":      tok("root", []string{"orders-admin"}, nil),
			"wrong-aud":  tok("bob", []string{"billing"}, nil),
			"no-aud":     tok("carol", nil, nil),
			"public-tok": tok("dave", []string{"public"}, nil),
		},
		errs: map[string]error{
			"expired":  reason.Wrap(reason.TokenExpired, errors.New("exp 5m ago")),
			"nokeys":   reason.New(reason.JWKSUnavailable),
			"internal": errors.New("disk on fire"),
		},
	}
	c := testChecker(t, v)
	tests := []struct {
		name          string
		host, path    string
		authz         string
		wantAllowed   bool
		wantStatus    int
		wantReason    reason.Code
		wantService   string
		wantChallenge string // substring of www-authenticate
		wantUpstream  []Header
		wantRemove    []string
		wantErr       bool
	}{
		{name: "valid token → allowed with identity headers", host: "orders.example.com", path: "/v1/orders", authz: "Bearer good",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "orders",
			wantUpstream: []Header{{"x-user-roles", "admin,reader"}, {"x-user-id", "alice"}, {"x-tenant", "acmex-evil: 1"}, {"x-org", `{"id":7}`}},
			wantRemove:   []string{"authorization"}},
		{name: "bearer scheme is case-insensitive", host: "orders.example.com", path: "/", authz: "bEaReR   good",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "orders"},
		{name: "port in authority is ignored", host: "orders.example.com:8443", path: "/", authz: "Bearer good",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "orders"},
		{name: "host is matched case-insensitively", host: "Orders.Example.COM", path: "/", authz: "Bearer good",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "orders"},
		{name: "longest path prefix wins", host: "orders.example.com", path: "/admin/users", authz: "Bearer admin",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "orders-admin",
			wantRemove: []string{"authorization", "x-user-roles", "x-tenant", "x-org"}},
		{name: "token for another prefix's audience → 401", host: "orders.example.com", path: "/admin", authz: "Bearer good",
			wantStatus: 401, wantReason: reason.TokenAudience, wantService: "orders-admin", wantChallenge: `error="invalid_token", error_description="token audience not accepted"`},
		{name: "no matching service → 403", host: "unknown.example.com", path: "/", authz: "Bearer good",
			wantStatus: 403, wantReason: reason.NoService},
		{name: "missing credential → 401 with bare challenge", host: "orders.example.com", path: "/",
			wantStatus: 401, wantReason: reason.CredentialMissing, wantService: "orders", wantChallenge: `Bearer realm="tollgate"`},
		{name: "basic credential counts as missing", host: "orders.example.com", path: "/", authz: "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
			wantStatus: 401, wantReason: reason.CredentialMissing, wantService: "orders"},
		{name: "empty bearer → malformed", host: "orders.example.com", path: "/", authz: "Bearer ",
			wantStatus: 401, wantReason: reason.TokenMalformed, wantService: "orders", wantChallenge: `error="invalid_token"`},
		{name: "oversized token → 401 before verification", host: "orders.example.com", path: "/", authz: "Bearer " + strings.Repeat("a", 2000),
			wantStatus: 401, wantReason: reason.TokenTooLarge, wantService: "orders", wantChallenge: `error_description="token too large"`},
		{name: "expired token → 401 naming the reason", host: "orders.example.com", path: "/", authz: "Bearer expired",
			wantStatus: 401, wantReason: reason.TokenExpired, wantService: "orders", wantChallenge: `error_description="token expired"`},
		{name: "wrong audience → 401", host: "orders.example.com", path: "/", authz: "Bearer wrong-aud",
			wantStatus: 401, wantReason: reason.TokenAudience, wantService: "orders"},
		{name: "no audience on a service that declares one → 401", host: "orders.example.com", path: "/", authz: "Bearer no-aud",
			wantStatus: 401, wantReason: reason.TokenMissingAud, wantService: "orders"},
		{name: "service without audiences accepts any aud", host: "noaud.example.com", path: "/", authz: "Bearer no-aud",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "noaud"},
		{name: "keys unavailable → 503 with retry-after", host: "orders.example.com", path: "/", authz: "Bearer nokeys",
			wantStatus: 503, wantReason: reason.JWKSUnavailable, wantService: "orders"},
		{name: "verifier failure → error", host: "orders.example.com", path: "/", authz: "Bearer internal", wantErr: true},
		{name: "optional without token → anonymous, identity headers stripped", host: "public.example.com", path: "/",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "public",
			wantRemove: []string{"x-user-roles", "x-user-id", "x-tenant", "x-org"}},
		{name: "optional with invalid token → still 401", host: "public.example.com", path: "/", authz: "Bearer expired",
			wantStatus: 401, wantReason: reason.TokenExpired, wantService: "public"},
		{name: "optional with valid token → identity", host: "public.example.com", path: "/", authz: "Bearer public-tok",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "public"},
		{name: "auth none ignores even a bad token", host: "open.example.com", path: "/", authz: "Bearer expired",
			wantAllowed: true, wantStatus: 200, wantReason: reason.OK, wantService: "open",
			wantRemove: []string{"x-user-roles", "x-user-id", "x-tenant", "x-org"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"x-user-id": "spoofed"}
			if tt.authz != "" {
				h["authorization"] = tt.authz
			}
			d, err := c.Check(t.Context(), &Request{ID: "req-1", Host: tt.host, Path: tt.path, Headers: h})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Check = %+v, nil; want an error", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check = %v; want no error", err)
			}
			if d.Allowed != tt.wantAllowed || d.Status != tt.wantStatus || d.Reason != tt.wantReason || d.Service != tt.wantService {
				t.Errorf("Check = {allowed %v status %d reason %s service %q}; want {%v %d %s %q}",
					d.Allowed, d.Status, d.Reason, d.Service, tt.wantAllowed, tt.wantStatus, tt.wantReason, tt.wantService)
			}
			if tt.wantChallenge != "" {
				if got := header(d.Response, "www-authenticate"); !strings.Contains(got, tt.wantChallenge) {
					t.Errorf("www-authenticate = %q; want it to contain %q", got, tt.wantChallenge)
				}
			}
			if tt.wantUpstream != nil && !slices.Equal(d.Upstream, tt.wantUpstream) {
				t.Errorf("upstream headers = %q; want %q", d.Upstream, tt.wantUpstream)
			}
			if tt.wantRemove != nil && !slices.Equal(d.Remove, tt.wantRemove) {
				t.Errorf("removed headers = %q; want %q", d.Remove, tt.wantRemove)
			}
			if !d.Allowed {
				if !json.Valid([]byte(d.Body)) || !strings.Contains(d.Body, `"request_id":"req-1"`) {
					t.Errorf("deny body = %s; want JSON with the request id", d.Body)
				}
				if strings.Contains(d.Body, tt.authz) && tt.authz != "" {
					t.Errorf("deny body %s echoes the credential", d.Body)
				}
			}
			if tt.wantStatus == 503 && header(d.Response, "retry-after") == "" {
				t.Errorf("503 without retry-after: %q", d.Response)
			}
		})
	}
}

func TestOversizedTokenNeverReachesVerifier(t *testing.T) {
	t.Parallel()
	v := &fakeVerifier{}
	c := testChecker(t, v)
	_, _ = c.Check(t.Context(), &Request{Host: "orders.example.com", Path: "/", Headers: map[string]string{"authorization": "Bearer " + strings.Repeat("x", 5000)}})
	if n := v.calls.Load(); n != 0 {
		t.Errorf("verifier called %d times for an oversized token; want 0", n)
	}
}

func TestDenyBodyNeverEchoesUnsafeRequestID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{`"},"x":"`, "a\nb", strings.Repeat("a", 200)} {
		b := denyBody(reason.TokenExpired, id)
		if !json.Valid([]byte(b)) || strings.Contains(b, "request_id") {
			t.Errorf("denyBody(%q) = %s; want valid JSON without the unsafe id", id, b)
		}
	}
}

func TestWildcardAndExactRouting(t *testing.T) {
	t.Parallel()
	r, err := newRouter([]Service{
		{Name: "catchall", Hosts: []string{"*"}},
		{Name: "api", Hosts: []string{"*"}, PathPrefixes: []string{"/api"}},
		{Name: "exact", Hosts: []string{"x.example.com"}, PathPrefixes: []string{"/only"}},
		{Name: "v6", Hosts: []string{"::1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ host, path, want string }{
		{"any.example.com", "/", "catchall"},
		{"any.example.com", "/api/x", "api"},
		{"x.example.com", "/only/1", "exact"},
		{"x.example.com", "/other", "catchall"}, // exact host, no prefix match → wildcard
		{"[::1]:8080", "/", "v6"},
	}
	for _, tt := range tests {
		if got := r.match(tt.host, tt.path); got == nil || got.Name != tt.want {
			t.Errorf("match(%q, %q) = %v; want %s", tt.host, tt.path, got, tt.want)
		}
	}
}

func header(hs []Header, k string) string {
	for _, h := range hs {
		if h.Key == k {
			return h.Value
		}
	}
	return ""
}
