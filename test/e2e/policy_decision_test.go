package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// TestPolicyDecisionObject loads testdata/policy/decision, whose decision
// object uses every field Tollgate maps, and checks that each reaches the
// CheckResponse, and that the identity headers stay Tollgate's.
func TestPolicyDecisionObject(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-decision")
	p := newIDP(t, 300, key)
	dir := polCopyDir(t, "testdata/policy/decision")
	tg := startTollgate(t, polConfig(p, "debug", []polService{
		{name: "orders", host: ordersHost, auth: "required"},
		{name: "undefined", host: "undefined.example.com", auth: "required", query: "data.tollgate.authz.no_such_rule"},
	}, polSection([]string{dir})))
	var sent sentTokens
	alice := sign(t, key, validClaims(p.issuer()).with(claims{"roles": []string{"reader"}}), nil)
	sent.add(alice)
	req := func(host, path string, headers map[string]string) polReq {
		return polReq{host: host, method: "GET", path: path, token: alice, headers: headers}
	}

	cases := []polCase{
		{
			name: "allowed object → policy headers, removals, response headers, query rewrite and metadata in the OkResponse",
			req:  req(ordersHost, "/allow?debug=1&page=2", map[string]string{"x-debug": "1", "x-user-id": "spoofed"}),
			want: polOutcome{
				code: codes.OK,
				set: map[string]string{
					"x-policy": "granted", "x-policy-subject": "alice",
					"x-user-id": "alice", "x-user-roles": "reader",
				},
				remove: []string{"authorization", "x-debug"},
			},
			also: func(t *testing.T, resp *authv3.CheckResponse) {
				ok := resp.GetOkResponse()
				if got := polHeaderValues(ok.GetResponseHeadersToAdd(), "x-policy-response"); !slices.Equal(got, []string{"added"}) {
					t.Errorf("Check response_headers_to_add x-policy-response = %q; want [added] (all: %v)", got, ok.GetResponseHeadersToAdd())
				}
				var qs []string
				for _, q := range ok.GetQueryParametersToSet() {
					qs = append(qs, q.GetKey()+"="+q.GetValue())
				}
				if !slices.Equal(qs, []string{"tenant=acme"}) {
					t.Errorf("Check query_parameters_to_set = %q; want [tenant=acme]", qs)
				}
				if got := ok.GetQueryParametersToRemove(); !slices.Equal(got, []string{"debug"}) {
					t.Errorf("Check query_parameters_to_remove = %q; want [debug]", got)
				}
				md := resp.GetDynamicMetadata().AsMap()
				want := map[string]any{"policy_version": "v7", "subject": "alice", "weight": float64(3)}
				if fmt.Sprint(md) != fmt.Sprint(want) {
					t.Errorf("Check dynamic_metadata = %v; want %v", md, want)
				}
			},
		},
		{
			name: "policy removing x-user-id → ignored: Envoy removes after setting, Tollgate's x-user-id must survive",
			req:  req(ordersHost, "/allow", nil),
			want: polAllow(map[string]string{"x-user-id": "alice"}),
			also: noIdentityRemoval,
		},
		{
			name: "policy setting and removing X-User-Id (mixed case) → Tollgate's x-user-id still the only one and kept",
			req:  req(ordersHost, "/allow-mixed-case", map[string]string{"x-user-id": "spoofed"}),
			want: polAllow(map[string]string{"x-user-id": "alice", "x-user-roles": "reader"}),
			also: noIdentityRemoval,
		},
		{
			name: "denied object with http_status 429, headers and body → exactly those reach the client",
			req:  req(ordersHost, "/ratelimit", nil),
			want: polOutcome{
				code: codes.PermissionDenied, reason: "policy_denied", http: http.StatusTooManyRequests,
				body: "slow down",
				set:  map[string]string{"retry-after": "7", "content-type": "text/plain", "x-ratelimit-policy": "orders"},
			},
		},
		{
			name: "denied object with http_status 401 only → 401 policy_denied with Tollgate's body",
			req:  req(ordersHost, "/login", nil),
			want: polDenied(http.StatusUnauthorized),
		},
		{
			name: "default {allowed: false} → 403 policy_denied with Tollgate's JSON body",
			req:  req(ordersHost, "/anything", nil),
			want: func() polOutcome {
				o := polDenied(http.StatusForbidden)
				o.set = map[string]string{"content-type": "application/json"}
				o.absent = []string{"x-policy", "x-user-id"}
				return o
			}(),
		},
		{
			name: "service policy_query naming no rule → undefined → 403 policy_denied",
			req:  req("undefined.example.com", "/allow", nil),
			want: polDenied(http.StatusForbidden),
		},
	}
	t.Run("cases", func(t *testing.T) { polRunCases(t, tg, "pol-dec", cases) })

	t.Run("undefined decision is logged as such", func(t *testing.T) {
		id := fmt.Sprintf("pol-dec-%02d", len(cases)-1)
		ok, _ := polEventually(2*time.Second, 20*time.Millisecond, func() bool {
			for line := range strings.Lines(tg.stderr.String()) {
				if strings.Contains(line, `"request_id":"`+id+`"`) && strings.Contains(line, "policy decision undefined") {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Errorf("tollgate logs have no deny line for %s with detail %q; logs:\n%s", id, "policy decision undefined", tg.stderr.String())
		}
	})

	t.Run("logs never contain the token", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), sent.all())
	})
}

// noIdentityRemoval fails when an allowed response removes x-user-id in
// any spelling: Envoy applies headers_to_remove after the headers it sets.
func noIdentityRemoval(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	for _, h := range resp.GetOkResponse().GetHeadersToRemove() {
		if strings.EqualFold(h, "x-user-id") {
			t.Errorf("Check headers_to_remove = %q; want no x-user-id in any case (Envoy would drop Tollgate's identity header)",
				resp.GetOkResponse().GetHeadersToRemove())
		}
	}
}

// TestPolicyEvalFailures checks that a slow policy and a policy failing at
// run time deny with 500 and leave the server healthy.
func TestPolicyEvalFailures(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-fail")
	p := newIDP(t, 300, key)
	dir := polCopyDir(t, "testdata/policy/errors")
	services := []polService{{name: "orders", host: ordersHost, auth: "required"}}
	token := func(t *testing.T) string { return sign(t, key, validClaims(p.issuer()), nil) }

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		tg := startTollgate(t, polConfig(p, "info", services, polSection([]string{dir}, `timeout: "1ms"`)))
		tok := token(t)

		t.Run("slow comprehension beyond policy.timeout 1ms → 500 policy_timeout, answered promptly", func(t *testing.T) {
			// Four at once: each must be cut off, not queue behind the others.
			for i := range 4 {
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					t.Parallel()
					id := fmt.Sprintf("pol-slow-%d", i)
					start := time.Now()
					resp := tg.check(t, polReq{path: "/slow", token: tok}.build(t, id))
					if d := time.Since(start); d > time.Second {
						t.Errorf("Check(%s) took %v; want the 1ms timeout to cut the evaluation off (the policy needs seconds)", id, d.Round(time.Millisecond))
					}
					polAssert(t, resp, id, polFailure("policy_timeout", "policy evaluation timed out"))
				})
			}
		})

		t.Run("server still healthy and ready after timeouts", func(t *testing.T) {
			select {
			case <-tg.done:
				t.Fatalf("tollgate exited (%v); stderr:\n%s", tg.cmd.ProcessState, tg.stderr.String())
			default:
			}
			if status, body := tg.get(t, "/healthz"); status != http.StatusOK {
				t.Errorf("GET /healthz = %d %q; want 200", status, body)
			}
			if status, ready, _ := polReadyz(t, tg); status != http.StatusOK || !ready {
				t.Errorf("GET /readyz = %d ready=%v; want 200 ready", status, ready)
			}
			if got := polMetric(t, tg, "tollgate_checks_total", map[string]string{"reason": "policy_timeout"}); got != 4 {
				t.Errorf("tollgate_checks_total{reason=policy_timeout} = %v; want 4", got)
			}
		})
	})

	t.Run("runtime error", func(t *testing.T) {
		t.Parallel()
		// A generous timeout: only the conflict may fail these requests.
		tg := startTollgate(t, polConfig(p, "info", services, polSection([]string{dir}, `timeout: "2s"`)))
		tok := token(t)

		t.Run("conflicting complete rule values → 500 policy_error", func(t *testing.T) {
			for i := range 3 {
				id := fmt.Sprintf("pol-conflict-%d", i)
				resp := tg.check(t, polReq{path: "/conflict", token: tok}.build(t, id))
				polAssert(t, resp, id, polFailure("policy_error", "policy evaluation failed"))
			}
		})

		t.Run("no crash: the next request is decided normally", func(t *testing.T) {
			resp := tg.check(t, polReq{path: "/fast", token: tok}.build(t, "pol-after-conflict"))
			polAssert(t, resp, "pol-after-conflict", polAllow(map[string]string{"x-user-id": "alice"}))
			resp = tg.check(t, polReq{path: "/other", token: tok}.build(t, "pol-after-conflict-deny"))
			polAssert(t, resp, "pol-after-conflict-deny", polDenied(http.StatusForbidden))
		})

		t.Run("the error is logged with OPA's code and location", func(t *testing.T) {
			ok, _ := polEventually(2*time.Second, 20*time.Millisecond, func() bool {
				for line := range strings.Lines(tg.stderr.String()) {
					if strings.Contains(line, `"pol-conflict-0"`) && strings.Contains(line, "eval_conflict_error") && strings.Contains(line, "policy.rego:") {
						return true
					}
				}
				return false
			})
			if !ok {
				t.Errorf("tollgate logs have no line for pol-conflict-0 with eval_conflict_error and policy.rego:LINE; logs:\n%s", tg.stderr.String())
			}
		})
	})
}

// decisionLine is one line of the decision log.
type decisionLine struct {
	Timestamp time.Time `json:"timestamp"`
	RequestID string    `json:"request_id"`
	Service   string    `json:"service"`
	Query     string    `json:"query"`
	Identity  struct {
		Type    string `json:"type"`
		Issuer  string `json:"issuer"`
		Subject string `json:"subject"`
	} `json:"identity"`
	Decision *struct {
		Defined    bool `json:"defined"`
		Allowed    bool `json:"allowed"`
		HTTPStatus int  `json:"http_status"`
	} `json:"decision"`
	Error          string `json:"error"`
	ErrorCode      string `json:"error_code"`
	ErrorLocation  string `json:"error_location"`
	EvalDurationNS *int64 `json:"eval_duration_ns"`
}

// TestPolicyDecisionLog enables the decision log to a file and checks one
// JSON line per decision, with no credential in it.
func TestPolicyDecisionLog(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-dlog")
	p := newIDP(t, 300, key)
	dir := polCopyDir(t, "testdata/policy/errors")
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	tg := startTollgate(t, polConfig(p, "info", []polService{{name: "orders", host: ordersHost, auth: "required"}},
		polSection([]string{dir}, `timeout: "2s"`, fmt.Sprintf("decision_log: {enabled: true, path: %q}", logPath))))

	type sentReq struct {
		id, sub, path string
		allowed       bool
		err           string // error code, "" for none
		token         string
	}
	reqs := []sentReq{
		{id: "pol-dl-allow", sub: "alice", path: "/fast", allowed: true},
		{id: "pol-dl-deny", sub: "bob", path: "/nothing-here"},
		{id: "pol-dl-error", sub: "carol", path: "/conflict", err: "policy_error"},
	}
	var sent sentTokens
	for i := range reqs {
		r := &reqs[i]
		r.token = sign(t, key, validClaims(p.issuer()).with(claims{"sub": r.sub}), nil)
		sent.add(r.token)
		resp := tg.check(t, polReq{path: r.path, token: r.token}.build(t, r.id))
		if got := allowed(resp); got != r.allowed {
			t.Fatalf("Check(%s) = %s; want allowed=%v", r.id, polDescribe(resp), r.allowed)
		}
	}

	// The log is flushed every second.
	var lines []string
	ok, took := polEventually(4*time.Second, 50*time.Millisecond, func() bool {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return false
		}
		lines = nil
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		for _, r := range reqs {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"`+r.id+`"`) }) {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("decision log %s after %v has lines %q; want one per request %v", logPath, took.Round(time.Millisecond), lines, reqs)
	}
	t.Logf("all decisions in the log after %v", took.Round(time.Millisecond))

	t.Run("one JSON line per decision with request id, service, subject, decision, query and eval time", func(t *testing.T) {
		if len(lines) != len(reqs) {
			t.Errorf("decision log has %d lines; want %d, one per Check:\n%s", len(lines), len(reqs), strings.Join(lines, "\n"))
		}
		byID := map[string][]decisionLine{}
		for _, l := range lines {
			var d decisionLine
			if err := json.Unmarshal([]byte(l), &d); err != nil {
				t.Errorf("decision log line %q is not JSON: %v", l, err)
				continue
			}
			byID[d.RequestID] = append(byID[d.RequestID], d)
		}
		for _, r := range reqs {
			got := byID[r.id]
			if len(got) != 1 {
				t.Errorf("decision log lines for %s = %d; want 1", r.id, len(got))
				continue
			}
			d := got[0]
			if d.Service != "orders" || d.Query != "data.tollgate.authz.allow" {
				t.Errorf("decision %s service, query = %q, %q; want orders, data.tollgate.authz.allow", r.id, d.Service, d.Query)
			}
			if d.Identity.Type != "jwt" || d.Identity.Subject != r.sub || d.Identity.Issuer != p.issuer() {
				t.Errorf("decision %s identity = %+v; want jwt, subject %q, issuer %q", r.id, d.Identity, r.sub, p.issuer())
			}
			if d.Decision == nil || d.Decision.Allowed != r.allowed || d.Decision.Defined != (r.err == "") {
				t.Errorf("decision %s decision = %+v; want allowed=%v defined=%v", r.id, d.Decision, r.allowed, r.err == "")
			}
			if d.Error != r.err {
				t.Errorf("decision %s error = %q; want %q", r.id, d.Error, r.err)
			}
			if d.EvalDurationNS == nil || *d.EvalDurationNS <= 0 {
				t.Errorf("decision %s eval_duration_ns = %v; want a positive duration", r.id, d.EvalDurationNS)
			}
			if d.Timestamp.IsZero() || time.Since(d.Timestamp) > time.Minute {
				t.Errorf("decision %s timestamp = %v; want the time of the request", r.id, d.Timestamp)
			}
		}
		if e := byID["pol-dl-error"]; len(e) == 1 && (e[0].ErrorCode != "eval_conflict_error" || !strings.Contains(e[0].ErrorLocation, "policy.rego:")) {
			t.Errorf("decision pol-dl-error error_code, error_location = %q, %q; want eval_conflict_error, policy.rego:LINE", e[0].ErrorCode, e[0].ErrorLocation)
		}
	})

	t.Run("no token and no header in the decision log", func(t *testing.T) {
		b, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range sent.all() {
			for _, n := range tokenNeedles(tok) {
				if strings.Contains(string(b), n) {
					t.Errorf("decision log contains a token (%.24q…); want none", n)
				}
			}
		}
		for _, s := range []string{"Bearer", "authorization", "user-agent"} {
			if strings.Contains(string(b), s) {
				t.Errorf("decision log contains %q; want no request header in it:\n%s", s, b)
			}
		}
	})

	t.Run("the log file is created 0600", func(t *testing.T) {
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("decision log mode = %v; want 0600", perm)
		}
	})
}
