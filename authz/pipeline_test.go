package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/jwks"
	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// The fakes below implement the consumer interfaces; the real stores,
// engine and keyring have their own tests, and test/e2e runs them all in
// the real binary.

type fakeSessions map[string]any // id → session.Record or error

func (f fakeSessions) Lookup(_ context.Context, id string) (session.Record, error) {
	switch v := f[id].(type) {
	case session.Record:
		return v, nil
	case error:
		return session.Record{}, v
	}
	return session.Record{}, reason.New(reason.SessionNotFound)
}

type fakePolicy struct {
	res   policy.Result
	err   error
	input *policy.Input
}

func (f *fakePolicy) Eval(_ context.Context, in *policy.Input) (policy.Result, error) {
	f.input = in
	return f.res, f.err
}

type fakeMinter struct {
	err  error
	reqs []keyring.MintRequest
}

func (f *fakeMinter) Mint(_ context.Context, r keyring.MintRequest) (string, error) {
	f.reqs = append(f.reqs, r)
	if f.err != nil {
		return "", f.err
	}
	return "minted-for-" + r.Audience, nil
}

const (
	sidAlice = "sid-alice"
	sidDown  = "sid-down"
)

func pipelineChecker(t *testing.T, pol PolicyEvaluator, m *fakeMinter, scfg SessionConfig) *Checker {
	t.Helper()
	v := &fakeVerifier{tokens: map[string]*jwks.Token{"jwt-bob": tok("bob", []string{"orders-api"}, map[string]any{"roles": []any{"reader"}})}}
	if scfg.Cookie == "" {
		scfg.Cookie, scfg.Header = "tollgate_session", "x-session-id"
	}
	opts := []Option{
		WithSessions(fakeSessions{
			sidAlice:  session.Record{IDHash: "hash-alice", Subject: "alice", Claims: map[string]any{"roles": []any{"admin"}}},
			sidDown:   reason.Wrap(reason.SessionStoreUnavailable, errors.New("redis: connection refused")),
			"sid-old": reason.New(reason.SessionExpired),
		}, scfg),
		WithMinter(m, MintConfig{Header: "x-internal-jwt", ForJWT: true}),
	}
	if pol != nil {
		opts = append(opts, WithPolicy(pol))
	}
	c, err := New(Config{
		Services: []Service{
			{Name: "orders", Hosts: []string{"orders.example.com"}, Audiences: []string{"orders-api"}, InternalAudience: "orders-internal"},
			{Name: "public", Hosts: []string{"public.example.com"}, Auth: AuthOptional},
		},
		ClaimHeaders:  []ClaimHeader{{Claim: "sub", Header: "x-user-id"}, {Claim: "roles", Header: "x-user-roles"}},
		RemoveHeaders: []string{"authorization"},
	}, v, opts...)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return c
}

func TestSessionOutsideJWTInside(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		host        string
		headers     map[string]string
		scfg        SessionConfig
		wantStatus  int
		wantReason  reason.Code
		wantSet     map[string]string
		wantRemoved []string
		wantMintKey string
	}{
		{name: "session cookie → allowed, internal JWT for the service's audience, only the session cookie stripped",
			host: "orders.example.com", headers: map[string]string{"cookie": "a=1; tollgate_session=" + sidAlice + "; b=2", "x-internal-jwt": "forged"},
			wantStatus: 200, wantReason: reason.OK,
			wantSet:     map[string]string{"x-user-id": "alice", "x-user-roles": "admin", "x-internal-jwt": "minted-for-orders-internal", "cookie": "a=1; b=2"},
			wantRemoved: []string{"authorization"}, wantMintKey: "hash-alice"},
		{name: "session header → allowed, header removed, lone cookie-less request",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			wantStatus: 200, wantReason: reason.OK, wantSet: map[string]string{"x-internal-jwt": "minted-for-orders-internal"},
			wantRemoved: []string{"x-session-id"}, wantMintKey: "hash-alice"},
		{name: "only the session cookie → the cookie header is removed",
			host: "orders.example.com", headers: map[string]string{"cookie": "tollgate_session=" + sidAlice},
			wantStatus: 200, wantReason: reason.OK, wantRemoved: []string{"cookie"}},
		{name: "session wins over a bearer token by default",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice, "authorization": "Bearer jwt-bob"},
			wantStatus: 200, wantReason: reason.OK, wantSet: map[string]string{"x-user-id": "alice"}, wantMintKey: "hash-alice"},
		{name: "precedence jwt → the bearer token wins and the session is still stripped",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice, "authorization": "Bearer jwt-bob"},
			scfg:       SessionConfig{Cookie: "tollgate_session", Header: "x-session-id", PreferJWT: true},
			wantStatus: 200, wantReason: reason.OK, wantSet: map[string]string{"x-user-id": "bob"}, wantRemoved: []string{"x-session-id", "authorization"}},
		{name: "unknown session → 401",
			host: "orders.example.com", headers: map[string]string{"x-session-id": "sid-unknown"},
			wantStatus: 401, wantReason: reason.SessionNotFound},
		{name: "expired session → 401",
			host: "orders.example.com", headers: map[string]string{"x-session-id": "sid-old"},
			wantStatus: 401, wantReason: reason.SessionExpired},
		{name: "store down, on_store_error deny → 503",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidDown},
			wantStatus: 503, wantReason: reason.SessionStoreUnavailable},
		{name: "store down, on_store_error anonymous, required service → 401",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidDown},
			scfg:       SessionConfig{Cookie: "tollgate_session", Header: "x-session-id", AnonymousOnStoreError: true},
			wantStatus: 401, wantReason: reason.CredentialMissing},
		{name: "store down, on_store_error anonymous, optional service → anonymous, forged internal token removed",
			host: "public.example.com", headers: map[string]string{"x-session-id": sidDown, "x-internal-jwt": "forged"},
			scfg:       SessionConfig{Cookie: "tollgate_session", Header: "x-session-id", AnonymousOnStoreError: true},
			wantStatus: 200, wantReason: reason.OK, wantRemoved: []string{"x-user-id", "x-internal-jwt", "x-session-id"}},
		{name: "JWT identity also gets an internal token (for_jwt), keyed by the token hash",
			host: "orders.example.com", headers: map[string]string{"authorization": "Bearer jwt-bob"},
			wantStatus: 200, wantReason: reason.OK, wantSet: map[string]string{"x-internal-jwt": "minted-for-orders-internal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := &fakeMinter{}
			c := pipelineChecker(t, nil, m, tt.scfg)
			d, err := c.Check(t.Context(), &Request{ID: "r1", Host: tt.host, Path: "/", Headers: tt.headers})
			if err != nil {
				t.Fatalf("Check = %v", err)
			}
			if d.Status != tt.wantStatus || d.Reason != tt.wantReason {
				t.Fatalf("Check = %d %s (%v); want %d %s", d.Status, d.Reason, d.detail, tt.wantStatus, tt.wantReason)
			}
			for k, v := range tt.wantSet {
				if got := header(d.Upstream, k); got != v {
					t.Errorf("upstream %s = %q; want %q (all: %q)", k, got, v, d.Upstream)
				}
			}
			for _, k := range tt.wantRemoved {
				if !slices.Contains(d.Remove, k) {
					t.Errorf("removed = %q; want it to contain %s", d.Remove, k)
				}
			}
			if tt.wantMintKey != "" && (len(m.reqs) != 1 || m.reqs[0].CacheKey != tt.wantMintKey || m.reqs[0].Audience != "orders-internal") {
				t.Errorf("mint requests = %+v; want one with key %s for orders-internal", m.reqs, tt.wantMintKey)
			}
			for _, h := range d.Upstream {
				if strings.Contains(h.Value, "sid-") || h.Value == "forged" {
					t.Errorf("upstream header %s carries a credential or forged value: %q", h.Key, h.Value)
				}
			}
		})
	}
}

func TestMintFailureNeverAllows(t *testing.T) {
	t.Parallel()
	c := pipelineChecker(t, nil, &fakeMinter{err: reason.New(reason.SigningUnavailable)}, SessionConfig{})
	d, err := c.Check(t.Context(), &Request{Host: "orders.example.com", Path: "/", Headers: map[string]string{"x-session-id": sidAlice}})
	if err != nil || d.Allowed || d.Status != 503 || d.Reason != reason.SigningUnavailable {
		t.Errorf("Check = %+v, %v; want 503 signing_unavailable", d, err)
	}
}

func TestPolicyDecisions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		host       string
		headers    map[string]string
		pol        fakePolicy
		wantStatus int
		wantReason reason.Code
		wantBody   string
		check      func(t *testing.T, d Decision)
	}{
		{name: "undefined → 403", host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			pol: fakePolicy{res: policy.Result{}}, wantStatus: 403, wantReason: reason.PolicyDenied},
		{name: "deny with status, body and headers → exactly those", host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			pol:        fakePolicy{res: policy.Result{Defined: true, HTTPStatus: 429, Body: "slow down", Headers: []policy.Header{{Key: "retry-after", Value: "9"}}}},
			wantStatus: 429, wantReason: reason.PolicyDenied, wantBody: "slow down",
			check: func(t *testing.T, d Decision) {
				if header(d.Response, "retry-after") != "9" {
					t.Errorf("denied response headers = %q; want the policy's", d.Response)
				}
			}},
		{name: "evaluation error → 500, never allow", host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			pol: fakePolicy{res: policy.Result{Allowed: true}, err: reason.Wrap(reason.PolicyError, errors.New("conflict"))}, wantStatus: 500, wantReason: reason.PolicyError},
		{name: "evaluation timeout → 500", host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			pol: fakePolicy{err: reason.New(reason.PolicyTimeout)}, wantStatus: 500, wantReason: reason.PolicyTimeout},
		{name: "anonymous refused on an optional service → 401 challenge", host: "public.example.com",
			pol: fakePolicy{res: policy.Result{Defined: true}}, wantStatus: 401, wantReason: reason.CredentialMissing},
		{name: "allow: policy headers pass, identity and internal-token headers cannot be overridden or removed",
			host: "orders.example.com", headers: map[string]string{"x-session-id": sidAlice},
			pol: fakePolicy{res: policy.Result{Defined: true, Allowed: true,
				Headers:                 []policy.Header{{Key: "X-User-Id", Value: "mallory"}, {Key: "x-internal-jwt", Value: "forged"}, {Key: "x-route", Value: "blue"}},
				RequestHeadersToRemove:  []string{"X-User-Id", "x-debug"},
				ResponseHeadersToAdd:    []policy.Header{{Key: "x-policy", Value: "v2"}},
				QueryParametersToSet:    []policy.Header{{Key: "tenant", Value: "acme"}},
				QueryParametersToRemove: []string{"debug"},
			}},
			wantStatus: 200, wantReason: reason.OK,
			check: func(t *testing.T, d Decision) {
				var ids []string
				for _, h := range d.Upstream {
					if h.Key == "x-user-id" || h.Key == "x-internal-jwt" {
						ids = append(ids, h.Key+"="+h.Value)
					}
				}
				if !slices.Equal(ids, []string{"x-user-id=alice", "x-internal-jwt=minted-for-orders-internal"}) {
					t.Errorf("identity headers = %q; want only Tollgate's", ids)
				}
				if header(d.Upstream, "x-route") != "blue" || !slices.Contains(d.Remove, "x-debug") || slices.Contains(d.Remove, "x-user-id") {
					t.Errorf("upstream %q, removed %q; want the policy's own header and removal only", d.Upstream, d.Remove)
				}
				if header(d.Response, "x-policy") != "v2" || len(d.QuerySet) != 1 || !slices.Equal(d.QueryRemove, []string{"debug"}) {
					t.Errorf("response headers %q, query %q/%q; want the policy's", d.Response, d.QuerySet, d.QueryRemove)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.pol
			c := pipelineChecker(t, &p, &fakeMinter{}, SessionConfig{})
			d, err := c.Check(t.Context(), &Request{ID: "r1", Host: tt.host, Path: "/", Headers: tt.headers})
			if err != nil {
				t.Fatalf("Check = %v", err)
			}
			if d.Status != tt.wantStatus || d.Reason != tt.wantReason {
				t.Fatalf("Check = %d %s; want %d %s", d.Status, d.Reason, tt.wantStatus, tt.wantReason)
			}
			if tt.wantBody != "" && d.Body != tt.wantBody {
				t.Errorf("body = %q; want %q", d.Body, tt.wantBody)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
			if p.input != nil && p.input.Identity.Type == "session" && p.input.Identity.Subject != "alice" {
				t.Errorf("policy input identity = %+v; want alice's session", p.input.Identity)
			}
		})
	}
}
