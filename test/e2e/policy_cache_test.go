package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// cachePolicy decides on the method, the path and the roles claim; the
// clock package's decision reads the clock, so it cannot be cached.
const cachePolicy = `package tollgate.authz

default allow := false

allow := {"allowed": true, "headers": {"x-grant": concat(",", sort(grants))}} if count(grants) > 0

grants contains g if {
	some role in input.identity.claims.roles
	some g in data.grants[role][input.attributes.request.http.method]
	input.parsed_path[0] == "api"
}
`

const clockPolicy = `package clock

allow if {
	input.identity.type == "jwt"
	time.now_ns() > 0
}
`

const cacheData = `{"grants": {"reader": {"GET": ["read"]}, "writer": {"GET": ["read"], "POST": ["write"]}}}`

// TestPolicyDecisionCache drives the decision cache through the binary:
// repeated requests are answered from it with the same decisions, the
// load log says what keys it (or why a query is not cached), a reload
// replaces what it holds, and decision_cache.enabled: false turns it off.
func TestPolicyDecisionCache(t *testing.T) {
	t.Parallel()
	key := newES256Key(t, "pol-cache")
	p := newIDP(t, 300, key)
	var sent sentTokens
	mint := func(sub string, roles []string) string {
		tok := sign(t, key, validClaims(p.issuer()).with(claims{"sub": sub, "roles": roles}), nil)
		sent.add(tok)
		return tok
	}
	reader, writer := mint("rita", []string{"reader"}), mint("will", []string{"writer", "reader"})
	const apiHost, clockHost = "api.example.com", "clock.example.com"
	services := []polService{
		{name: "api", host: apiHost, auth: "required"},
		{name: "clock", host: clockHost, auth: "required", query: "data.clock.allow"},
	}
	dir := polWriteDir(t, map[string]string{"policy.rego": cachePolicy, "clock.rego": clockPolicy, "data.json": cacheData})
	tg := startTollgate(t, polConfig(p, "info", services, polSection([]string{dir})))

	grant := func(g string) polOutcome { return polAllow(map[string]string{"x-grant": g}) }
	cases := []polCase{
		{name: "reader GET → read", req: polReq{host: apiHost, method: "GET", path: "/api/orders", token: reader}, want: grant("read")},
		{name: "reader GET, other query string → read", req: polReq{host: apiHost, method: "GET", path: "/api/orders?page=2", token: reader}, want: grant("read")},
		{name: "reader POST → 403", req: polReq{host: apiHost, method: "POST", path: "/api/orders", token: reader}, want: polDenied(http.StatusForbidden)},
		{name: "writer POST → write", req: polReq{host: apiHost, method: "POST", path: "/api/orders", token: writer}, want: grant("write")},
		{name: "writer GET → read", req: polReq{host: apiHost, method: "GET", path: "/api/orders", token: writer}, want: grant("read")},
		{name: "writer GET outside /api → 403", req: polReq{host: apiHost, method: "GET", path: "/admin", token: writer}, want: polDenied(http.StatusForbidden)},
		{name: "clock service → allowed", req: polReq{host: clockHost, method: "GET", path: "/", token: reader}, want: polOutcome{code: codes.OK}},
	}
	hits := func() float64 { return polMetric(t, tg, "tollgate_policy_decision_cache_hits_total", nil) }
	misses := func() float64 { return polMetric(t, tg, "tollgate_policy_decision_cache_misses_total", nil) }

	t.Run("three rounds of the same requests: same decisions, later rounds from the cache", func(t *testing.T) {
		for round := range 3 {
			for i, tc := range cases {
				id := fmt.Sprintf("pol-cache-%d-%02d", round, i)
				polAssert(t, tg.check(t, tc.req.build(t, id)), id, tc.want)
			}
		}
		// Six api requests with five distinct keys (the query string is
		// not read): five misses, then hits; the clock service is never
		// cached, so it counts in neither.
		if h, m := hits(), misses(); m != 5 || h != 13 {
			t.Errorf("cache hits, misses = %v, %v; want 13, 5", h, m)
		}
		if n := polMetric(t, tg, "tollgate_policy_decision_cache_entries", nil); n != 5 {
			t.Errorf("tollgate_policy_decision_cache_entries = %v; want 5", n)
		}
	})

	t.Run("the load log names the key paths, and why the clock query is not cached", func(t *testing.T) {
		logs := tg.stderr.String()
		for _, want := range []string{
			`"msg":"policy decisions are cached","query":"data.tollgate.authz.allow","keyed_by":"input.attributes.request.http.method, input.identity.claims.roles, input.parsed_path"`,
			`"msg":"policy decisions are not cached","query":"data.clock.allow","because":"` + filepath.Join(dir, "clock.rego") + `:5: calls time.now_ns`,
		} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs lack %s; logs:\n%s", want, logs)
			}
		}
	})

	t.Run("a reload replaces cached decisions", func(t *testing.T) {
		polReplaceFile(t, filepath.Join(dir, "data.json"), `{"grants": {"reader": {}, "writer": {"GET": ["read"], "POST": ["write"]}}}`)
		start := time.Now()
		ok, _ := polEventually(3*time.Second, 20*time.Millisecond, func() bool {
			resp := tg.check(t, cases[0].req.build(t, "pol-cache-reload"))
			return resp.GetDeniedResponse() != nil
		})
		if !ok {
			t.Fatal("reader GET still allowed 3s after the data that granted it was removed")
		}
		t.Logf("new decision served %v after the write", time.Since(start).Round(time.Millisecond))
		polAssert(t, tg.check(t, cases[4].req.build(t, "pol-cache-reload-w")), "pol-cache-reload-w", grant("read"))
	})

	t.Run("decision_cache.enabled: false evaluates every decision", func(t *testing.T) {
		off := startTollgate(t, polConfig(p, "info", services, polSection([]string{dir}, "decision_cache: {enabled: false}")))
		for i := range 4 {
			id := fmt.Sprintf("pol-cache-off-%d", i)
			polAssert(t, off.check(t, cases[3].req.build(t, id)), id, cases[3].want)
		}
		if h := polMetric(t, off, "tollgate_policy_decision_cache_hits_total", nil); h != 0 {
			t.Errorf("cache hits = %v with the cache disabled; want 0", h)
		}
	})

	t.Run("logs never contain a token", func(t *testing.T) { assertNoTokenInLogs(t, tg.stderr.String(), sent.all()) })
}
