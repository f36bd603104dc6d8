package keyring

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/jwks"
)

func serve(k *Keyring, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, nil)
	for h, v := range hdr {
		req.Header.Set(h, v)
	}
	k.Publisher().ServeHTTP(rec, req)
	return rec
}

func TestPublisherPublicMembersOnly(t *testing.T) {
	t.Parallel()
	for _, alg := range []Algorithm{ES256, RS256, EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			cfg.Algorithm = alg
			cfg.PublishAhead = time.Minute
			k := startKeyring(t, cfg, newFileStore(t))
			if _, err := k.Rotate(t.Context()); err != nil { // a next key too
				t.Fatal(err)
			}
			rec := serve(k, http.MethodGet, JWKSPath, nil)
			var doc struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Keys) != 2 {
				t.Fatalf("published %d keys; want active and next", len(doc.Keys))
			}
			allowed := []string{"kty", "use", "alg", "kid", "crv", "x", "y", "n", "e"}
			for _, key := range doc.Keys {
				for m := range key {
					if !slices.Contains(allowed, m) {
						t.Errorf("published key has member %q", m)
					}
				}
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
					if _, ok := key[private]; ok {
						t.Errorf("published key has private member %q", private)
					}
				}
				if key["use"] != "sig" || key["alg"] != string(alg) {
					t.Errorf("key use/alg = %v/%v; want sig/%s", key["use"], key["alg"], alg)
				}
			}
			body := rec.Body.String()
			for _, private := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"dq"`, `"qi"`, `"k"`} {
				if strings.Contains(body, private) {
					t.Errorf("JWKS body contains %s", private)
				}
			}
		})
	}
}

func TestPublisherHTTP(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.PublishAhead = 2 * time.Minute
	cfg.MaxAge = 90 * time.Second
	cfg.BaseURL = "https://keys.example/"
	k := startKeyring(t, cfg, newFileStore(t))
	first := serve(k, http.MethodGet, JWKSPath, nil)
	etag := first.Header().Get("ETag")

	tests := []struct {
		name       string
		method     string
		path       string
		hdr        map[string]string
		wantStatus int
		wantBody   bool
	}{
		{"GET jwks → 200 with body", http.MethodGet, JWKSPath, nil, 200, true},
		{"HEAD jwks → 200 without body", http.MethodHead, JWKSPath, nil, 200, false},
		{"matching If-None-Match → 304", http.MethodGet, JWKSPath, map[string]string{"If-None-Match": etag}, 304, false},
		{"weak and listed If-None-Match → 304", http.MethodGet, JWKSPath, map[string]string{"If-None-Match": `"x", W/` + etag}, 304, false},
		{"stale If-None-Match → 200", http.MethodGet, JWKSPath, map[string]string{"If-None-Match": `"old"`}, 200, true},
		{"GET discovery → 200", http.MethodGet, DiscoveryPath, nil, 200, true},
		{"POST → 405", http.MethodPost, JWKSPath, nil, 405, false},
		{"other path → 404", http.MethodGet, "/.well-known/other", nil, 404, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(k, tc.method, tc.path, tc.hdr)
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s %s = %d; want %d", tc.method, tc.path, rec.Code, tc.wantStatus)
			}
			if tc.wantStatus == 200 || tc.wantStatus == 304 {
				if got := rec.Header().Get("Cache-Control"); got != "public, max-age=90" {
					t.Errorf("Cache-Control = %q; want public, max-age=90", got)
				}
				if rec.Header().Get("ETag") == "" {
					t.Error("no ETag")
				}
			}
			if got := rec.Body.Len() > 0; got != tc.wantBody && tc.wantStatus != 404 && tc.wantStatus != 405 {
				t.Errorf("body present = %v; want %v", got, tc.wantBody)
			}
		})
	}

	t.Run("discovery names issuer and jwks_uri", func(t *testing.T) {
		var d map[string]any
		if err := json.Unmarshal(serve(k, http.MethodGet, DiscoveryPath, nil).Body.Bytes(), &d); err != nil {
			t.Fatal(err)
		}
		if d["issuer"] != cfg.Issuer || d["jwks_uri"] != "https://keys.example/.well-known/jwks.json" {
			t.Errorf("discovery = %v", d)
		}
	})
	t.Run("key change → new ETag", func(t *testing.T) {
		if _, err := k.Rotate(t.Context()); err != nil {
			t.Fatal(err)
		}
		rec := serve(k, http.MethodGet, JWKSPath, map[string]string{"If-None-Match": etag})
		if rec.Code != 200 || rec.Header().Get("ETag") == etag {
			t.Errorf("after rotation: %d, ETag %s; want 200 and a new ETag", rec.Code, rec.Header().Get("ETag"))
		}
	})
	t.Run("before Start → 503", func(t *testing.T) {
		k2, _ := New(cfg, newFileStore(t))
		if rec := serve(k2, http.MethodGet, JWKSPath, nil); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("GET before Start = %d; want 503", rec.Code)
		}
	})
}

// TestDiscoveryWithTollgateVerifier checks that a verifier using OpenID
// discovery (Tollgate's own jwks.Verifier) accepts internal tokens given
// the issuer alone.
func TestDiscoveryWithTollgateVerifier(t *testing.T) {
	t.Parallel()
	var h atomic.Pointer[Publisher]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.Load().ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	cfg := baseConfig()
	cfg.Issuer = srv.URL
	k := startKeyring(t, cfg, newFileStore(t))
	h.Store(k.Publisher())

	v, err := jwks.New(jwks.Config{Issuers: []jwks.IssuerConfig{{Issuer: srv.URL, Discovery: true, Algorithms: []string{"ES256"}}}},
		jwks.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	tok, err := k.Mint(t.Context(), MintRequest{Subject: "alice", Audience: "orders", Claims: map[string]any{"roles": []string{"r"}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("jwks.Verifier.Verify = %v; want nil", err)
	}
	if got.Subject != "alice" || !got.HasAudience([]string{"orders"}) || got.KeyID != k.ActiveKID() {
		t.Errorf("verified token = %+v", got)
	}
}
