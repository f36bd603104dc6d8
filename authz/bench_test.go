package authz

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/devissuer"
	"github.com/tollgate-dev/tollgate/jwks"
)

// realPipeline builds a Checker on the real JWKS verifier, its keys served
// by a loopback httptest server, and returns a token it accepts.
func realPipeline(b *testing.B) (*Checker, string) {
	b.Helper()
	srvIss := httptest.NewServer(nil)
	iss, err := devissuer.LoadOrCreate(srvIss.URL, filepath.Join(b.TempDir(), "k.pem"))
	if err != nil {
		b.Fatal(err)
	}
	srvIss.Config.Handler = iss.JWKSHandler()
	b.Cleanup(srvIss.Close)
	v, err := jwks.New(jwks.Config{Issuers: []jwks.IssuerConfig{{
		Issuer: srvIss.URL, JWKSURI: srvIss.URL + "/jwks.json", Algorithms: []string{"ES256"}, Leeway: 30 * time.Second,
	}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = v.Stop(b.Context()) })
	for deadline := time.Now().Add(5 * time.Second); len(v.Missing()) > 0; {
		if time.Now().After(deadline) {
			b.Fatalf("keys not loaded: %v", v.Missing())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, err := New(Config{
		Services:      []Service{{Name: "orders", Hosts: []string{"*"}, Audiences: []string{"orders-api"}}},
		ClaimHeaders:  []ClaimHeader{{Claim: "sub", Header: "x-user-id"}, {Claim: "roles", Header: "x-user-roles"}},
		RemoveHeaders: []string{"authorization"},
	}, v, WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	tok, err := iss.Mint("alice", []string{"orders-api"}, time.Hour, map[string]any{"roles": []string{"admin", "reader"}}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return c, tok
}

// BenchmarkCheckCachedToken is the hot path: a token already verified.
// Target: ≤ 5 µs and ≤ 30 allocations per Check.
func BenchmarkCheckCachedToken(b *testing.B) {
	c, tok := realPipeline(b)
	req := envoyRequest("orders.example.com", "/v1/orders", "Bearer "+tok, nil)
	srv := NewGRPCServer(c)
	if resp, err := srv.Check(b.Context(), req); err != nil || resp.GetOkResponse() == nil {
		b.Fatalf("warm-up Check = %v, %v; want allowed", resp, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := srv.Check(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckCachedTokenParallel is the same on every core.
func BenchmarkCheckCachedTokenParallel(b *testing.B) {
	c, tok := realPipeline(b)
	req := envoyRequest("orders.example.com", "/v1/orders", "Bearer "+tok, nil)
	srv := NewGRPCServer(c)
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := srv.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCheckDenied measures a denial (missing credential), which also
// writes one log line in production; the logger here discards.
func BenchmarkCheckDenied(b *testing.B) {
	c, _ := realPipeline(b)
	req := envoyRequest("orders.example.com", "/v1/orders", "", nil)
	srv := NewGRPCServer(c)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := srv.Check(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
