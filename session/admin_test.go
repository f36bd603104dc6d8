package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const testAdminToken = "admin-token-0123456789abcdef"

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type adminEnv struct {
	srv   *httptest.Server
	store Store
	logs  *syncBuffer
}

func newAdminEnv(t *testing.T, store Store) *adminEnv {
	t.Helper()
	logs := &syncBuffer{}
	h, err := NewAdminHandler(recordingStore{store}, testAdminToken, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatalf("NewAdminHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &adminEnv{srv: srv, store: store, logs: logs}
}

func newMemoryAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	s, err := NewMemory(Config{}, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	return newAdminEnv(t, s)
}

// call sends one request and returns the status and body.
func (e *adminEnv) call(t *testing.T, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

const bearerToken = "Bearer " + testAdminToken

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	e := newMemoryAdminEnv(t)
	for _, tc := range []struct{ name, auth string }{
		{"no Authorization → 401", ""},
		{"wrong token → 401", "Bearer wrong-token-0123456789abcdef"},
		{"token prefix → 401", "Bearer " + testAdminToken[:10]},
		{"basic scheme → 401", "Basic " + testAdminToken},
		{"bearer without token → 401", "Bearer "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/sessions/x", "/v1/subjects/alice/sessions", "/nowhere"} {
				status, body, hdr := e.call(t, "GET", path, tc.auth, "")
				if status != http.StatusUnauthorized || !strings.Contains(body, `"error"`) ||
					!strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("GET %s with %q = %d %s; want 401 with a JSON error and WWW-Authenticate", path, tc.auth, status, body)
				}
			}
		})
	}
	if status, _, _ := e.call(t, "GET", "/v1/subjects/alice/sessions", "bearer "+testAdminToken, ""); status != http.StatusOK {
		t.Fatalf("lowercase bearer scheme = %d; want 200", status)
	}
	if strings.Contains(e.logs.String(), testAdminToken[:10]) {
		t.Fatalf("logs contain the admin token (or a prefix): %s", e.logs.String())
	}
	if _, err := NewAdminHandler(e.store, "short"); err == nil {
		t.Fatalf("NewAdminHandler with a 5-byte token succeeded")
	}
	if _, err := NewAdminHandler(nil, testAdminToken); err == nil {
		t.Fatalf("NewAdminHandler without a store succeeded")
	}
}

func TestAdminSessionLifecycle(t *testing.T) {
	t.Parallel()
	e := newMemoryAdminEnv(t)
	status, body, hdr := e.call(t, "POST", "/v1/sessions", bearerToken,
		`{"subject":"alice","claims":{"roles":["admin"],"tenant":"t1"},"metadata":{"device":"laptop"},"ttl":"1h"}`)
	if status != http.StatusCreated || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST /v1/sessions = %d %s (Cache-Control %q); want 201, no-store", status, body, hdr.Get("Cache-Control"))
	}
	var created AdminCreateResponse
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.SessionID == "" {
		t.Fatalf("create response %s: %v", body, err)
	}
	if d := time.Until(created.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires_at in %v; want about 1h", d)
	}
	id := created.SessionID

	status, body, _ = e.call(t, "GET", "/v1/sessions/"+id, bearerToken, "")
	if status != http.StatusOK || strings.Contains(body, id) || !strings.Contains(body, `"id_hash":"`+created.IDHash+`"`) {
		t.Fatalf("GET session = %d %s; want 200, id_hash and no raw ID", status, body)
	}
	var rec Record
	if err := json.Unmarshal([]byte(body), &rec); err != nil || rec.Subject != "alice" || rec.Metadata["device"] != "laptop" {
		t.Fatalf("GET session record = %+v, %v", rec, err)
	}

	_, _, _ = e.call(t, "POST", "/v1/sessions", bearerToken, `{"subject":"alice"}`)
	status, body, _ = e.call(t, "GET", "/v1/subjects/alice/sessions", bearerToken, "")
	var list AdminSessions
	if status != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Sessions) != 2 || strings.Contains(body, id) {
		t.Fatalf("GET subject sessions = %d %s; want 200 with 2 sessions, no raw ID", status, body)
	}

	if status, body, _ = e.call(t, "DELETE", "/v1/sessions/"+id, bearerToken, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE session = %d %s; want 204", status, body)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if status, body, _ = e.call(t, m, "/v1/sessions/"+id, bearerToken, ""); status != http.StatusNotFound || !strings.Contains(body, "session not found") {
			t.Fatalf("%s revoked session = %d %s; want 404", m, status, body)
		}
	}
	if status, _, _ = e.call(t, "DELETE", "/v1/subjects/alice/sessions", bearerToken, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE subject sessions = %d; want 204", status)
	}
	status, body, _ = e.call(t, "GET", "/v1/subjects/alice/sessions", bearerToken, "")
	if status != http.StatusOK || strings.TrimSpace(body) != `{"sessions":[]}` {
		t.Fatalf("GET subject sessions after revoke = %d %s; want 200 {\"sessions\":[]}", status, body)
	}
	if logs := e.logs.String(); strings.Contains(logs, id) || strings.Contains(logs, testAdminToken) ||
		!strings.Contains(logs, created.IDHash[:12]) {
		t.Fatalf("logs must name the ID hash prefix and never the ID or token:\n%s", logs)
	}
}

func TestAdminRejectsBadRequests(t *testing.T) {
	t.Parallel()
	e := newMemoryAdminEnv(t)
	valid, _ := newID()
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"unknown field → 400", "POST", "/v1/sessions", `{"subject":"a","admin":true}`, 400, "unknown field"},
		{"not JSON → 400", "POST", "/v1/sessions", `{"subject":`, 400, "not valid JSON"},
		{"empty body → 400", "POST", "/v1/sessions", ``, 400, "empty"},
		{"two objects → 400", "POST", "/v1/sessions", `{"subject":"a"}{"subject":"b"}`, 400, "exactly one"},
		{"wrong type → 400", "POST", "/v1/sessions", `{"subject":42}`, 400, "wrong type"},
		{"bad ttl → 400", "POST", "/v1/sessions", `{"subject":"a","ttl":"soon"}`, 400, "ttl"},
		{"negative ttl → 400", "POST", "/v1/sessions", `{"subject":"a","ttl":"-1h"}`, 400, "ttl"},
		{"ttl beyond absolute → 400", "POST", "/v1/sessions", `{"subject":"a","ttl":"13h"}`, 400, "absolute timeout"},
		{"missing subject → 400", "POST", "/v1/sessions", `{"claims":{"a":1}}`, 400, "subject"},
		{"body over 64 KiB → 413", "POST", "/v1/sessions", `{"subject":"a","claims":{"x":"` + strings.Repeat("x", MaxAdminBody) + `"}}`, 413, "exceeds"},
		{"malformed ID → 400", "GET", "/v1/sessions/not-an-id", "", 400, "malformed"},
		{"malformed ID on delete → 400", "DELETE", "/v1/sessions/not-an-id", "", 400, "malformed"},
		{"unknown ID → 404", "GET", "/v1/sessions/" + valid, "", 404, "not found"},
		{"unknown ID on delete → 404", "DELETE", "/v1/sessions/" + valid, "", 404, "not found"},
		{"unknown path → 404", "GET", "/v2/things", "", 404, "no such endpoint"},
		{"wrong method → 405", "PUT", "/v1/sessions/" + valid, "", 405, "method"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, body, hdr := e.call(t, tc.method, tc.path, bearerToken, tc.body)
			var got adminError
			if status != tc.status || json.Unmarshal([]byte(body), &got) != nil || !strings.Contains(got.Error, tc.msg) ||
				hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %s = %d %s; want %d with a JSON error containing %q", tc.method, tc.path, status, body, tc.status, tc.msg)
			}
			if strings.Contains(body, "admin\":true") || (len(tc.body) > 0 && strings.Contains(got.Error, tc.body)) {
				t.Fatalf("error echoes the input: %s", body)
			}
		})
	}
}

func TestAdminStoreUnavailable(t *testing.T) {
	t.Parallel()
	s, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}},
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop(t.Context()) })
	e := newAdminEnv(t, s)
	id, _ := newID()
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/sessions", `{"subject":"a"}`},
		{"GET", "/v1/sessions/" + id, ""},
		{"DELETE", "/v1/sessions/" + id, ""},
		{"GET", "/v1/subjects/a/sessions", ""},
		{"DELETE", "/v1/subjects/a/sessions", ""},
	} {
		status, body, _ := e.call(t, r.method, r.path, bearerToken, r.body)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "session store unavailable") {
			t.Fatalf("%s %s with Redis down = %d %s; want 503", r.method, r.path, status, body)
		}
	}
	if strings.Contains(e.logs.String(), id) {
		t.Fatalf("logs contain a session ID")
	}
}

func TestAdminClientRoundTrip(t *testing.T) {
	t.Parallel()
	e := newMemoryAdminEnv(t)
	c := &AdminClient{BaseURL: e.srv.URL + "/", Token: testAdminToken, HTTPClient: e.srv.Client()}
	ctx := t.Context()
	out, err := c.Create(ctx, AdminCreateRequest{Subject: "team/alice", Claims: map[string]any{"roles": []string{"x"}}, TTL: "2h"})
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	recordID(out.SessionID)
	rec, err := c.Get(ctx, out.SessionID)
	if err != nil || rec.Subject != "team/alice" || rec.IDHash != out.IDHash {
		t.Fatalf("Get = %+v, %v", rec, err)
	}
	list, err := c.List(ctx, "team/alice")
	if err != nil || len(list) != 1 {
		t.Fatalf("List(team/alice) = %v, %v; want 1 session (a subject with a slash)", list, err)
	}
	if err := c.Revoke(ctx, out.SessionID); err != nil {
		t.Fatalf("Revoke = %v", err)
	}
	var ae *AdminError
	if err := c.Revoke(ctx, out.SessionID); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("second Revoke = %v; want a 404 AdminError", err)
	}
	if err := c.RevokeSubject(ctx, "team/alice"); err != nil {
		t.Fatalf("RevokeSubject = %v", err)
	}
	bad := &AdminClient{BaseURL: e.srv.URL, Token: "wrong-token-0123456789", HTTPClient: e.srv.Client()}
	if _, err := bad.List(ctx, "x"); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("List with a wrong token = %v; want a 401 AdminError", err)
	}
}
