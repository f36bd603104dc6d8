package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// sessionBody is the config after the server section for the session
// tests: the orders service, whose internal tokens (audience
// orders-internal) carry the session's email and roles claims; signing
// keys in the config dir; sessions in the Redis at redisAddr; the admin
// token in tokenFile. redisOpts is added to the sessions.redis map (", key:
// value"), sessions to the sessions section ("  key: value\n" lines).
func sessionBody(redisAddr, tokenFile, redisOpts, sessions string) string {
	return fmt.Sprintf(`log: {level: "debug", format: "json"}
services:
  - name: "orders"
    hosts: ["orders.example.com"]
    path_prefixes: ["/"]
    audiences: ["orders-api"]
    internal_audience: "orders-internal"
    auth: "required"
headers:
  claims_to_headers: {sub: "x-user-id"}
  remove: ["authorization"]
internal_token:
  enabled: true
  issuer: %q
  ttl: "60s"
  claims: ["email", "roles"]
keys:
  dir: "keys"
sessions:
  store: "redis"
  redis: {addrs: [%q]%s}
%sadmin:
  token_file: %q
`, testIssuer, redisAddr, redisOpts, sessions, tokenFile)
}

// sessionToken is the internal token a session of sub with claims
// yields under sessionBody.
func sessionToken(sub string, claims map[string]any) wantToken {
	return wantToken{iss: testIssuer, aud: "orders-internal", sub: sub, ttl: time.Minute, claims: claims}
}

// requireSessionDenied fails unless resp is the 401 of session reason
// code with its fixed description.
func requireSessionDenied(t *testing.T, resp *authv3.CheckResponse, reqID, code, description string) {
	t.Helper()
	assertDenied(t, resp, sessionDenied(code, description), reqID, "")
}

// requireStoreUnavailable fails unless resp is the 503 of an unreachable
// session store, with a retry-after header.
func requireStoreUnavailable(t *testing.T, resp *authv3.CheckResponse, reqID string) {
	t.Helper()
	assertDenied(t, resp, checkCase{
		wantCode:   codes.Unavailable,
		wantReason: "session_store_unavailable",
		wantHTTP:   503,
		wantError:  "session store unavailable",
	}, reqID, "")
	if h, ok := headerValue(resp.GetDeniedResponse().GetHeaders(), "retry-after"); !ok || h.GetHeader().GetValue() == "" {
		t.Errorf("Check(store down) denied headers = %v; want retry-after", resp.GetDeniedResponse().GetHeaders())
	}
}

// assertIDNotUpstream fails if the session ID is in any header the
// OkResponse sets.
func assertIDNotUpstream(t *testing.T, resp *authv3.CheckResponse, id string) {
	t.Helper()
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if strings.Contains(h.GetHeader().GetValue(), id) {
			t.Errorf("Check OkResponse header %q carries the session ID; want it never sent upstream", h.GetHeader().GetKey())
		}
	}
}

// verifyWithServedJWKS verifies an internal token with the JWKS the
// server publishes at this moment.
func verifyWithServedJWKS(t *testing.T, tg *tgProc, tok string, w wantToken) string {
	t.Helper()
	set, _ := fetchJWKS(t, tg.jwksURL())
	kid, _, err := verifyInternalToken(set, tok, w, time.Now())
	if err != nil {
		t.Fatalf("verify x-internal-jwt with %s: %v", tg.jwksURL(), err)
	}
	return kid
}

// TestSessionLifecycle creates a session through the admin API, uses it
// as a browser and as an API client would, and logs it out; then does the
// same with the `tollgate session` command.
func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	dir := t.TempDir()
	tokenFile, adminToken := writeAdminToken(t, dir)
	tg := launchTollgate(t, tgOptions{dir: dir, admin: true, body: sessionBody(r.addr, tokenFile, "", "  local_cache: true\n")})
	api := tg.admin(adminToken)

	aliceClaims := map[string]any{"email": "alice@example.com", "roles": []string{"reader", "writer"}, "tenant": "t-1"}
	want := sessionToken("alice", map[string]any{"email": "alice@example.com", "roles": []string{"reader", "writer"}})
	s := api.create(t, "alice", aliceClaims)
	stays := api.create(t, "zoe", nil) // alive at the end, for the Redis scan
	ids := []string{s.SessionID, stays.SessionID}

	t.Run("create → 201 with a 43-character base64url ID and its SHA-256 as id_hash", func(t *testing.T) {
		raw, err := base64.RawURLEncoding.Strict().DecodeString(s.SessionID)
		if err != nil || len(s.SessionID) != 43 || len(raw) != 32 {
			t.Fatalf("session_id = %d characters, decoded %d bytes (%v); want 43 characters of base64url for 32 bytes", len(s.SessionID), len(raw), err)
		}
		sum := sha256.Sum256(raw)
		if got := hex.EncodeToString(sum[:]); s.IDHash != got {
			t.Errorf("id_hash = %q; want hex SHA-256 of the ID's bytes %q", s.IDHash, got)
		}
		if left := time.Until(s.ExpiresAt); left < 11*time.Hour || left > 12*time.Hour+time.Minute {
			t.Errorf("expires_at = %v (in %v); want the default absolute timeout, 12h", s.ExpiresAt, left)
		}
	})

	t.Run("admin API without a token or with a wrong one → 401", func(t *testing.T) {
		for _, tok := range []string{"", "not-the-admin-token-0123456789"} {
			status, h, b := api.do(t, http.MethodPost, "/v1/sessions", tok, map[string]any{"subject": "mallory"})
			if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("POST /v1/sessions with token %q = %d %s (WWW-Authenticate %q); want 401 with a Bearer challenge", tok, status, b, h.Get("WWW-Authenticate"))
			}
		}
	})

	t.Run("GET /v1/sessions/{id} → the record under its id_hash, never the ID", func(t *testing.T) {
		status, _, b := api.do(t, http.MethodGet, "/v1/sessions/"+s.SessionID, adminToken, nil)
		var rec struct {
			IDHash  string         `json:"id_hash"`
			Subject string         `json:"subject"`
			Claims  map[string]any `json:"claims"`
		}
		if err := json.Unmarshal(b, &rec); status != http.StatusOK || err != nil || rec.IDHash != s.IDHash || rec.Subject != "alice" {
			t.Errorf("GET /v1/sessions/{id} = %d %s; want 200 with id_hash %q and subject alice", status, b, s.IDHash)
		}
		if strings.Contains(string(b), s.SessionID) {
			t.Errorf("GET /v1/sessions/{id} body contains the session ID; want only its hash")
		}
	})

	t.Run("cookie among others → allowed; upstream cookie keeps the others, intact", func(t *testing.T) {
		resp := checkWith(t, tg.tollgate, "sess-cookie", sessionCookie(s.SessionID))
		requireAllowed(t, "session cookie", resp)
		if got := upstreamHeader(t, resp, "cookie"); got != "a=1; b=2" {
			t.Errorf("upstream cookie = %q; want %q (session cookie removed, others intact)", got, "a=1; b=2")
		}
		if got := upstreamHeader(t, resp, "x-user-id"); got != "alice" {
			t.Errorf("upstream x-user-id = %q; want alice", got)
		}
		if slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "cookie") {
			t.Errorf("headers_to_remove = %v; want cookie rewritten, not removed", resp.GetOkResponse().GetHeadersToRemove())
		}
		assertIDNotUpstream(t, resp, s.SessionID)
	})

	t.Run("x-internal-jwt verifies with the served JWKS: iss, aud, exp-iat = ttl, jti, sub, configured claims only", func(t *testing.T) {
		resp := checkWith(t, tg.tollgate, "sess-jwt", sessionCookie(s.SessionID))
		requireAllowed(t, "session cookie", resp)
		tok := upstreamHeader(t, resp, "x-internal-jwt")
		set, body := fetchJWKS(t, tg.jwksURL())
		assertPublicOnly(t, body)
		kid, cl, err := verifyInternalToken(set, tok, want, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cl["tenant"]; ok {
			t.Errorf("internal token carries claim tenant; want only the configured claims email and roles")
		}
		t.Logf("internal token verified with kid %s", kid)
	})

	t.Run("client-sent x-internal-jwt: forged → overwritten by the minted token", func(t *testing.T) {
		h := sessionCookie(s.SessionID)
		h["x-internal-jwt"] = "forged"
		resp := checkWith(t, tg.tollgate, "sess-forged", h)
		requireAllowed(t, "session cookie with a forged x-internal-jwt", resp)
		tok := upstreamHeader(t, resp, "x-internal-jwt")
		if tok == "forged" {
			t.Fatalf("upstream x-internal-jwt = %q; want the minted token", tok)
		}
		verifyWithServedJWKS(t, tg, tok, want)
	})

	t.Run("x-session-id header → allowed; the header is removed upstream, cookies untouched", func(t *testing.T) {
		resp := checkWith(t, tg.tollgate, "sess-header", map[string]string{"x-session-id": s.SessionID, "cookie": "a=1"})
		requireAllowed(t, "x-session-id", resp)
		ok := resp.GetOkResponse()
		if !slices.Contains(ok.GetHeadersToRemove(), "x-session-id") {
			t.Errorf("headers_to_remove = %v; want x-session-id", ok.GetHeadersToRemove())
		}
		if h, found := headerValue(ok.GetHeaders(), "cookie"); found || slices.Contains(ok.GetHeadersToRemove(), "cookie") {
			t.Errorf("Check(x-session-id) touches cookie (set %v, remove %v); want it left as sent", h, ok.GetHeadersToRemove())
		}
		verifyWithServedJWKS(t, tg, upstreamHeader(t, resp, "x-internal-jwt"), want)
		assertIDNotUpstream(t, resp, s.SessionID)
	})

	t.Run("session cookie alone → the cookie header is removed upstream", func(t *testing.T) {
		resp := checkWith(t, tg.tollgate, "sess-cookie-alone", map[string]string{"cookie": "tollgate_session=" + s.SessionID})
		requireAllowed(t, "session cookie alone", resp)
		ok := resp.GetOkResponse()
		if !slices.Contains(ok.GetHeadersToRemove(), "cookie") {
			t.Errorf("headers_to_remove = %v; want cookie", ok.GetHeadersToRemove())
		}
		if h, found := headerValue(ok.GetHeaders(), "cookie"); found {
			t.Errorf("upstream cookie = %q; want the header removed", h.GetHeader().GetValue())
		}
	})

	t.Run("x-session-id and a session cookie together → both stripped upstream", func(t *testing.T) {
		h := sessionCookie(s.SessionID)
		h["x-session-id"] = s.SessionID
		resp := checkWith(t, tg.tollgate, "sess-both", h)
		requireAllowed(t, "x-session-id and session cookie", resp)
		if !slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "x-session-id") {
			t.Errorf("headers_to_remove = %v; want x-session-id", resp.GetOkResponse().GetHeadersToRemove())
		}
		if got := upstreamHeader(t, resp, "cookie"); got != "a=1; b=2" {
			t.Errorf("upstream cookie = %q; want %q", got, "a=1; b=2")
		}
		assertIDNotUpstream(t, resp, s.SessionID)
	})

	t.Run("quoted cookie value → allowed; the cookie is stripped", func(t *testing.T) {
		resp := checkWith(t, tg.tollgate, "sess-quoted", map[string]string{"cookie": `a=1; tollgate_session="` + s.SessionID + `"`})
		requireAllowed(t, "quoted session cookie", resp)
		if got := upstreamHeader(t, resp, "cookie"); got != "a=1" {
			t.Errorf("upstream cookie = %q; want %q", got, "a=1")
		}
		assertIDNotUpstream(t, resp, s.SessionID)
	})

	t.Run("logout: DELETE /v1/sessions/{id} → 204, then Check → 401 session_not_found", func(t *testing.T) {
		api.revoke(t, s.SessionID)
		// The very next Check: the local cache of this replica was
		// invalidated by the revoke itself.
		resp := checkWith(t, tg.tollgate, "sess-after-logout", sessionCookie(s.SessionID))
		requireSessionDenied(t, resp, "sess-after-logout", "session_not_found", "session not found")
		resp = checkWith(t, tg.tollgate, "sess-after-logout-header", map[string]string{"x-session-id": s.SessionID})
		requireSessionDenied(t, resp, "sess-after-logout-header", "session_not_found", "session not found")
		if status, _, b := api.do(t, http.MethodDelete, "/v1/sessions/"+s.SessionID, adminToken, nil); status != http.StatusNotFound {
			t.Errorf("second DELETE /v1/sessions/{id} = %d %s; want 404", status, b)
		}
	})

	t.Run("tollgate session create, list, revoke, revoke-subject against the admin API", func(t *testing.T) {
		cli := func(t *testing.T, args ...string) (int, string, string) {
			t.Helper()
			return runCLI(t, append([]string{"session"}, append(args, "--admin", "http://"+tg.adminAddr, "--token-file", tokenFile)...)...)
		}
		check := func(t *testing.T, reqID, id string) *authv3.CheckResponse {
			t.Helper()
			return checkWith(t, tg.tollgate, reqID, sessionCookie(id))
		}

		code, out, errOut := cli(t, "create", "--subject", "carol", "--claim", "email=carol@example.com",
			"--claim", "roles=reader", "--claim", "roles=writer", "--json")
		var c1 createdSession
		if err := json.Unmarshal([]byte(out), &c1); code != 0 || err != nil || c1.SessionID == "" {
			t.Fatalf("tollgate session create --json = exit %d, stdout %q, stderr %q; want exit 0 and {session_id,...}", code, out, errOut)
		}
		ids = append(ids, c1.SessionID)
		resp := check(t, "cli-create", c1.SessionID)
		requireAllowed(t, "session created by the CLI", resp)
		verifyWithServedJWKS(t, tg, upstreamHeader(t, resp, "x-internal-jwt"),
			sessionToken("carol", map[string]any{"email": "carol@example.com", "roles": []string{"reader", "writer"}}))

		code, out, errOut = cli(t, "create", "--subject", "carol")
		m := regexp.MustCompile(`(?m)^session_id\s+(\S+)$`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("tollgate session create = exit %d, stdout %q, stderr %q; want exit 0 and a session_id line", code, out, errOut)
		}
		c2 := m[1]
		ids = append(ids, c2)
		requireAllowed(t, "second session created by the CLI", check(t, "cli-create-2", c2))

		code, out, errOut = cli(t, "list", "carol", "--json")
		var listed struct {
			Sessions []struct {
				IDHash string `json:"id_hash"`
			} `json:"sessions"`
		}
		if err := json.Unmarshal([]byte(out), &listed); code != 0 || err != nil || len(listed.Sessions) != 2 {
			t.Fatalf("tollgate session list carol --json = exit %d, stdout %q, stderr %q; want exit 0 and 2 sessions", code, out, errOut)
		}
		if !slices.ContainsFunc(listed.Sessions, func(s struct {
			IDHash string `json:"id_hash"`
		}) bool {
			return s.IDHash == c1.IDHash
		}) {
			t.Errorf("tollgate session list carol = %s; want id_hash %s among them", out, c1.IDHash)
		}
		code, text, _ := cli(t, "list", "carol")
		if code != 0 || !strings.Contains(text, c1.IDHash[:12]) {
			t.Errorf("tollgate session list carol = exit %d, %q; want exit 0 and the id_hash prefix %s", code, text, c1.IDHash[:12])
		}
		for _, id := range []string{c1.SessionID, c2} {
			if strings.Contains(out+text, id) {
				t.Errorf("tollgate session list prints a session ID; want only hashes")
			}
		}

		code, out, errOut = cli(t, "revoke", c1.SessionID)
		if code != 0 || !strings.Contains(out, "revoked") {
			t.Fatalf("tollgate session revoke = exit %d, stdout %q, stderr %q; want exit 0 and \"revoked\"", code, out, errOut)
		}
		requireSessionDenied(t, check(t, "cli-revoked", c1.SessionID), "cli-revoked", "session_not_found", "session not found")
		requireAllowed(t, "the subject's other session after revoke", check(t, "cli-other", c2))

		code, out, errOut = cli(t, "revoke-subject", "carol")
		if code != 0 {
			t.Fatalf("tollgate session revoke-subject carol = exit %d, stdout %q, stderr %q; want exit 0", code, out, errOut)
		}
		requireSessionDenied(t, check(t, "cli-revoked-subject", c2), "cli-revoked-subject", "session_not_found", "session not found")
		code, out, _ = cli(t, "list", "carol", "--json")
		if err := json.Unmarshal([]byte(out), &listed); code != 0 || err != nil || len(listed.Sessions) != 0 {
			t.Errorf("tollgate session list carol after revoke-subject = exit %d, %q; want no sessions", code, out)
		}
		if code, _, errOut := cli(t, "revoke", c1.SessionID); code != 1 {
			t.Errorf("tollgate session revoke of a revoked session = exit %d (stderr %q); want 1", code, errOut)
		}
		badToken := dir + "/wrong.token"
		writeFile(t, badToken, "not-the-admin-token-0123456789\n")
		if code, _, errOut := runCLI(t, "session", "create", "--subject", "x", "--admin", "http://"+tg.adminAddr, "--token-file", badToken); code != 1 || !strings.Contains(errOut, "401") {
			t.Errorf("tollgate session create with a wrong admin token = exit %d, stderr %q; want exit 1 naming 401", code, errOut)
		}
	})

	t.Run("redis holds no raw session ID in any key or value", func(t *testing.T) {
		assertNoRawSessionIDs(t, r, ids, []string{stays.IDHash})
	})
	t.Run("logs never contain a raw session ID", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), ids)
	})
}

// TestSessionRevocationAcrossReplicas runs two replicas with local caches
// on one Redis: a revoke-subject on one reaches both within 1s.
func TestSessionRevocationAcrossReplicas(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	tokenFile, adminToken := writeAdminToken(t, t.TempDir())
	body := sessionBody(r.addr, tokenFile, "", "  local_cache: true\n")
	a := launchTollgate(t, tgOptions{admin: true, body: body})
	b := launchTollgate(t, tgOptions{admin: true, body: body})
	replicas := []*tgProc{a, b}
	names := []string{"A", "B"}
	api := a.admin(adminToken)
	revoked := []createdSession{api.create(t, "frank", nil), api.create(t, "frank", nil)}
	other := api.create(t, "grace", nil)
	ids := []string{revoked[0].SessionID, revoked[1].SessionID, other.SessionID}

	t.Run("sessions created through replica A → allowed on both replicas", func(t *testing.T) {
		for ri, tg := range replicas {
			for si, s := range append(slices.Clone(revoked), other) {
				requireAllowed(t, fmt.Sprintf("session %d on replica %s", si, names[ri]),
					checkWith(t, tg.tollgate, fmt.Sprintf("warm-%d-%d", ri, si), sessionCookie(s.SessionID)))
			}
		}
	})

	t.Run("revoke-subject on replica A → both replicas deny within 1s", func(t *testing.T) {
		// Fill both local caches right before the revocation.
		for ri, tg := range replicas {
			for si, s := range revoked {
				requireAllowed(t, "warm-up", checkWith(t, tg.tollgate, fmt.Sprintf("prime-%d-%d", ri, si), sessionCookie(s.SessionID)))
			}
		}
		api.revokeSubject(t, "frank")
		waitDeniedEverywhere(t, replicas, names, revoked, time.Second)
	})

	t.Run("logout of one session on replica B → both replicas deny it within 1s", func(t *testing.T) {
		apiB := b.admin(adminToken)
		s := apiB.create(t, "hank", nil)
		ids = append(ids, s.SessionID)
		for ri, tg := range replicas {
			requireAllowed(t, "warm-up", checkWith(t, tg.tollgate, fmt.Sprintf("hank-prime-%d", ri), sessionCookie(s.SessionID)))
		}
		apiB.revoke(t, s.SessionID)
		waitDeniedEverywhere(t, replicas, names, []createdSession{s}, time.Second)
	})

	t.Run("another subject's session → still allowed on both replicas", func(t *testing.T) {
		for ri, tg := range replicas {
			requireAllowed(t, "grace's session on replica "+names[ri], checkWith(t, tg.tollgate, fmt.Sprintf("other-%d", ri), sessionCookie(other.SessionID)))
		}
	})
	t.Run("redis holds no raw session ID in any key or value", func(t *testing.T) {
		assertNoRawSessionIDs(t, r, ids, []string{other.IDHash})
	})
	t.Run("logs never contain a raw session ID", func(t *testing.T) {
		for _, tg := range replicas {
			assertNoTokenInLogs(t, tg.stderr.String(), ids)
		}
	})
}

// waitDeniedEverywhere polls every replica every 50ms with every
// session, from now until each answers 401 session_not_found, and fails
// unless all do within bound or if one allows a session again after
// denying it.
func waitDeniedEverywhere(t *testing.T, replicas []*tgProc, names []string, sessions []createdSession, bound time.Duration) {
	t.Helper()
	start := time.Now()
	const every = 50 * time.Millisecond
	deniedAt := map[[2]int]time.Duration{}
	for round := 0; ; round++ {
		for ri, tg := range replicas {
			for si, s := range sessions {
				reqID := fmt.Sprintf("poll-%s-%d-%d", s.IDHash[:8], round, ri)
				resp := checkWith(t, tg.tollgate, reqID, sessionCookie(s.SessionID))
				k := [2]int{ri, si}
				_, was := deniedAt[k]
				switch {
				case allowed(resp) && was:
					t.Errorf("replica %s allowed revoked session %d again after denying it", names[ri], si)
				case allowed(resp):
				case resp.GetStatus().GetMessage() != "session_not_found":
					t.Errorf("replica %s: Check(revoked session %d) = %s; want 401 session_not_found", names[ri], si, describe(resp))
				case !was:
					deniedAt[k] = time.Since(start)
				}
			}
		}
		if len(deniedAt) == len(replicas)*len(sessions) {
			break
		}
		if time.Since(start) > bound {
			t.Fatalf("%v after the revocation: denied (replica, session) → after = %v; want all %d denied within %v",
				time.Since(start).Round(time.Millisecond), deniedAt, len(replicas)*len(sessions), bound)
		}
		time.Sleep(every)
	}
	t.Logf("denied after (replica, session) → %v", deniedAt)
}

// TestSessionExpiry compresses time: idle_timeout 1s, absolute_timeout 3s,
// max_per_subject 1; with and without the local lookup cache.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	for _, cache := range []bool{false, true} {
		t.Run(fmt.Sprintf("local_cache %v", cache), func(t *testing.T) {
			t.Parallel()
			testSessionExpiry(t, cache)
		})
	}
}

func testSessionExpiry(t *testing.T, localCache bool) {
	r := startRedis(t)
	tokenFile, adminToken := writeAdminToken(t, t.TempDir())
	tg := launchTollgate(t, tgOptions{admin: true, body: sessionBody(r.addr, tokenFile, "",
		fmt.Sprintf("  idle_timeout: \"1s\"\n  absolute_timeout: \"3s\"\n  max_per_subject: 1\n  local_cache: %v\n", localCache))})
	api := tg.admin(adminToken)
	const idle, absolute = time.Second, 3 * time.Second
	// Each case creates its sessions itself: a parallel subtest may wait
	// for a slot longer than these timeouts.
	var mu sync.Mutex
	var ids, live []string
	create := func(t *testing.T, subject string) createdSession {
		t.Helper()
		s := api.create(t, subject, nil)
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, s.SessionID)
		return s
	}

	t.Run("cases", func(t *testing.T) {
		t.Run("unused for longer than idle_timeout → 401 session_expired", func(t *testing.T) {
			t.Parallel()
			s := create(t, "idle-user")
			requireAllowed(t, "fresh session", checkWith(t, tg.tollgate, "idle-0", sessionCookie(s.SessionID)))
			lastUse := time.Now()
			time.Sleep(time.Until(lastUse.Add(idle + 400*time.Millisecond)))
			resp := checkWith(t, tg.tollgate, "idle-1", sessionCookie(s.SessionID))
			requireSessionDenied(t, resp, "idle-1", "session_expired", "session expired")
		})

		t.Run("used every 250ms → allowed past idle_timeout, then 401 session_expired at absolute_timeout", func(t *testing.T) {
			t.Parallel()
			s := create(t, "busy-user")
			mu.Lock()
			live = append(live, s.IDHash) // the record outlives its expiry by a minute
			mu.Unlock()
			created := s.ExpiresAt.Add(-absolute)
			const slack = 250 * time.Millisecond
			var lastAllowed time.Time
			for i := 0; ; i++ {
				reqID := fmt.Sprintf("busy-%d", i)
				resp := checkWith(t, tg.tollgate, reqID, sessionCookie(s.SessionID))
				now := time.Now()
				if allowed(resp) {
					if now.After(s.ExpiresAt.Add(slack)) {
						t.Fatalf("Check %v after creation = allowed; want denied after the absolute timeout %v", now.Sub(created).Round(time.Millisecond), absolute)
					}
					lastAllowed = now
				} else {
					if now.Before(s.ExpiresAt.Add(-slack)) {
						t.Fatalf("Check %v after creation = %s; want allowed until the absolute timeout %v (idle expiry must slide)", now.Sub(created).Round(time.Millisecond), describe(resp), absolute)
					}
					requireSessionDenied(t, resp, reqID, "session_expired", "session expired")
					t.Logf("denied %v after creation; last allowed at %v", now.Sub(created).Round(time.Millisecond), lastAllowed.Sub(created).Round(time.Millisecond))
					break
				}
				if now.After(s.ExpiresAt.Add(time.Second)) {
					t.Fatalf("still allowed %v after creation; want session_expired after %v", now.Sub(created).Round(time.Millisecond), absolute)
				}
				time.Sleep(250 * time.Millisecond)
			}
			if lastAllowed.Sub(created) < 2*idle {
				t.Errorf("last allowed %v after creation; want use to keep the session alive well past idle_timeout %v", lastAllowed.Sub(created), idle)
			}
		})

		t.Run("max_per_subject 1: a second session evicts the first → first 401 session_not_found", func(t *testing.T) {
			t.Parallel()
			first := create(t, "erin")
			requireAllowed(t, "erin's first session", checkWith(t, tg.tollgate, "evict-0", sessionCookie(first.SessionID)))
			second := create(t, "erin")
			mu.Lock()
			live = append(live, second.IDHash)
			mu.Unlock()
			requireSessionDenied(t, checkWith(t, tg.tollgate, "evict-1", sessionCookie(first.SessionID)), "evict-1", "session_not_found", "session not found")
			requireAllowed(t, "erin's second session", checkWith(t, tg.tollgate, "evict-2", sessionCookie(second.SessionID)))
			status, _, b := api.do(t, http.MethodGet, "/v1/subjects/erin/sessions", adminToken, nil)
			var listed struct {
				Sessions []struct {
					IDHash string `json:"id_hash"`
				} `json:"sessions"`
			}
			if err := json.Unmarshal(b, &listed); status != http.StatusOK || err != nil || len(listed.Sessions) != 1 || listed.Sessions[0].IDHash != second.IDHash {
				t.Errorf("GET /v1/subjects/erin/sessions = %d %s; want only the second session %s", status, b, second.IDHash)
			}
		})
	})

	t.Run("redis holds no raw session ID in any key or value", func(t *testing.T) {
		// Expired records stay for a minute (to answer session_expired).
		assertNoRawSessionIDs(t, r, ids, live)
	})
	t.Run("logs never contain a raw session ID", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), ids)
	})
}

// malformedIDs are session IDs that are not 43 characters of canonical
// base64url, built around a valid (live) ID.
func malformedIDs(valid string) []struct {
	name    string
	headers map[string]string
} {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	// The last character of 32 bytes carries 2 unused bits; setting one
	// spells the same bytes non-canonically.
	last := strings.IndexByte(alphabet, valid[42])
	nonCanonical := valid[:42] + string(alphabet[last|1])
	cookie := func(v string) map[string]string {
		return map[string]string{"cookie": "a=1; tollgate_session=" + v + "; b=2"}
	}
	header := func(v string) map[string]string { return map[string]string{"x-session-id": v} }
	return []struct {
		name    string
		headers map[string]string
	}{
		{"empty cookie value", cookie("")},
		{"empty x-session-id header", header("")},
		{"10 KiB cookie value", cookie(strings.Repeat("A", 10<<10))},
		{"10 KiB x-session-id header", header(strings.Repeat("A", 10<<10))},
		{"43 characters outside base64url", cookie(strings.Repeat("!", 43))},
		{"standard base64 + and / in place of - and _", cookie(valid[:41] + "+/")},
		{"a NUL byte inside the valid ID", cookie(valid[:20] + "\x00" + valid[21:])},
		{"43 NUL bytes in x-session-id", header(strings.Repeat("\x00", 43))},
		{"42 characters (one short)", cookie(valid[:42])},
		{"44 characters (one too many)", cookie(valid + "A")},
		{"padded with =", header(valid + "=")},
		{"non-canonical spelling of the valid ID (trailing bits set)", cookie(nonCanonical)},
	}
}

// checkMalformed sends every malformed ID and requires 401
// session_malformed.
func checkMalformed(t *testing.T, tg *tgProc, tag, valid string) {
	t.Helper()
	for i, tc := range malformedIDs(valid) {
		t.Run(tc.name, func(t *testing.T) {
			reqID := fmt.Sprintf("malformed-%s-%02d", tag, i)
			start := time.Now()
			resp := checkWith(t, tg.tollgate, reqID, tc.headers)
			requireSessionDenied(t, resp, reqID, "session_malformed", "session id malformed")
			if d := time.Since(start); d > time.Second {
				t.Errorf("Check(malformed ID) took %v; want an answer without waiting for the store", d)
			}
		})
	}
}

// TestSessionStoreOutage freezes, kills and restarts Redis under a
// running tollgate: 503 while it is unreachable (fast once the circuit
// breaker is open), malformed IDs still 401, and allowed again after the
// restart without restarting tollgate.
func TestSessionStoreOutage(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	tokenFile, adminToken := writeAdminToken(t, t.TempDir())
	const redisTimeout = 250 * time.Millisecond
	tg := launchTollgate(t, tgOptions{admin: true, body: sessionBody(r.addr, tokenFile, `, timeout: "250ms"`, "")})
	api := tg.admin(adminToken)
	s := api.create(t, "olga", map[string]any{"email": "olga@example.com"})
	want := sessionToken("olga", map[string]any{"email": "olga@example.com"})

	t.Run("Redis up: session → allowed", func(t *testing.T) {
		requireAllowed(t, "session, Redis up", checkWith(t, tg.tollgate, "up-0", sessionCookie(s.SessionID)))
	})
	t.Run("Redis up: malformed ID → 401 session_malformed", func(t *testing.T) {
		checkMalformed(t, tg, "up", s.SessionID)
	})

	// The dump the restarted server loads, so the session outlives the
	// outage.
	if err := r.client(t).Save(t.Context()).Err(); err != nil {
		t.Fatalf("redis SAVE: %v", err)
	}

	t.Run("Redis frozen (SIGSTOP) → 503 session_store_unavailable with retry-after until the breaker opens", func(t *testing.T) {
		r.signal(t, syscall.SIGSTOP)
		const maxChecks = 20
		for i := range maxChecks {
			reqID := fmt.Sprintf("frozen-%d", i)
			start := time.Now()
			resp := checkWith(t, tg.tollgate, reqID, sessionCookie(s.SessionID))
			d := time.Since(start)
			requireStoreUnavailable(t, resp, reqID)
			if d < redisTimeout/5 {
				if i == 0 {
					t.Fatalf("first Check with Redis frozen answered in %v; want it to wait for the %v Redis timeout", d, redisTimeout)
				}
				t.Logf("breaker open after %d Checks that waited for the Redis timeout", i)
				return
			}
			if d > redisTimeout+time.Second {
				t.Errorf("Check %d with Redis frozen took %v; want at most about the Redis timeout %v", i, d, redisTimeout)
			}
		}
		t.Fatalf("%d Checks with Redis frozen all waited for the Redis timeout; want the circuit breaker to open", maxChecks)
	})

	t.Run("breaker open: 20 Checks → 503, each well under the 250ms Redis timeout", func(t *testing.T) {
		const n, limit = 20, 20 * time.Millisecond
		var slowest time.Duration
		for i := range n {
			reqID := fmt.Sprintf("open-%d", i)
			start := time.Now()
			resp := checkWith(t, tg.tollgate, reqID, sessionCookie(s.SessionID))
			d := time.Since(start)
			slowest = max(slowest, d)
			requireStoreUnavailable(t, resp, reqID)
			if d >= limit {
				t.Errorf("Check %d with the breaker open took %v; want < %v", i, d, limit)
			}
		}
		t.Logf("slowest of %d Checks with the breaker open: %v", n, slowest)
	})

	t.Run("Redis frozen: malformed ID → still 401 session_malformed, never 503", func(t *testing.T) {
		checkMalformed(t, tg, "down", s.SessionID)
	})

	t.Run("Redis killed → 503 session_store_unavailable", func(t *testing.T) {
		r.kill(t)
		resp := checkWith(t, tg.tollgate, "killed-0", sessionCookie(s.SessionID))
		requireStoreUnavailable(t, resp, "killed-0")
	})

	t.Run("Redis restarted on the same port → allowed again without restarting tollgate", func(t *testing.T) {
		r.restart(t)
		restarted := time.Now()
		const bound = 5 * time.Second
		for i := 0; ; i++ {
			reqID := fmt.Sprintf("restarted-%d", i)
			resp := checkWith(t, tg.tollgate, reqID, sessionCookie(s.SessionID))
			if allowed(resp) {
				t.Logf("allowed %v after the restart", time.Since(restarted).Round(time.Millisecond))
				verifyWithServedJWKS(t, tg, upstreamHeader(t, resp, "x-internal-jwt"), want)
				return
			}
			requireStoreUnavailable(t, resp, reqID)
			if time.Since(restarted) > bound {
				t.Fatalf("still %s %v after Redis restarted; want allowed within %v", describe(resp), time.Since(restarted).Round(time.Millisecond), bound)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("redis holds no raw session ID in any key or value", func(t *testing.T) {
		assertNoRawSessionIDs(t, r, []string{s.SessionID}, []string{s.IDHash})
	})
	t.Run("logs never contain a raw session ID", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), []string{s.SessionID})
	})
}

// TestSessionSurvivesRestart stops tollgate and starts a new process on
// the same Redis: the browser's cookie still works.
func TestSessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	dir := t.TempDir()
	tokenFile, adminToken := writeAdminToken(t, dir)
	body := sessionBody(r.addr, tokenFile, "", "")
	first := launchTollgate(t, tgOptions{dir: dir, admin: true, body: body})
	s := first.admin(adminToken).create(t, "henry", map[string]any{"email": "henry@example.com"})
	want := sessionToken("henry", map[string]any{"email": "henry@example.com"})

	var firstKID string
	t.Run("before the restart → allowed", func(t *testing.T) {
		resp := checkWith(t, first.tollgate, "restart-0", sessionCookie(s.SessionID))
		requireAllowed(t, "session before the restart", resp)
		firstKID = verifyWithServedJWKS(t, first, upstreamHeader(t, resp, "x-internal-jwt"), want)
	})

	first.shutdown(t)
	second := launchTollgate(t, tgOptions{dir: dir, admin: true, body: body})

	t.Run("new process on the same Redis → the old cookie is still allowed", func(t *testing.T) {
		resp := checkWith(t, second.tollgate, "restart-1", sessionCookie(s.SessionID))
		requireAllowed(t, "session after the restart", resp)
		kid := verifyWithServedJWKS(t, second, upstreamHeader(t, resp, "x-internal-jwt"), want)
		if firstKID != "" && kid != firstKID {
			t.Errorf("signing kid after the restart = %s; want %s (same keys dir)", kid, firstKID)
		}
	})
	t.Run("the new process's admin API lists the session", func(t *testing.T) {
		status, _, b := second.admin(adminToken).do(t, http.MethodGet, "/v1/subjects/henry/sessions", adminToken, nil)
		if status != http.StatusOK || !strings.Contains(string(b), s.IDHash) {
			t.Errorf("GET /v1/subjects/henry/sessions = %d %s; want 200 listing %s", status, b, s.IDHash)
		}
	})
	t.Run("redis holds no raw session ID in any key or value", func(t *testing.T) {
		assertNoRawSessionIDs(t, r, []string{s.SessionID}, []string{s.IDHash})
	})
	t.Run("logs never contain a raw session ID", func(t *testing.T) {
		assertNoTokenInLogs(t, first.stderr.String()+second.stderr.String(), []string{s.SessionID})
	})
}

// writeFile writes content to path (0600).
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
