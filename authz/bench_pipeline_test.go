package authz

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// The benchmarks below add one pipeline stage at a time to
// BenchmarkCheckCachedToken (bench_test.go), with the real component behind
// it, and call the same gRPC front door in-process. Each one's cost is the
// difference to that benchmark in the same run.

// benchPolicyDir holds a typical role → permission policy: a route table
// maps methods and path globs to a permission, a role table grants
// permissions to the roles of the caller's "roles" claim. test/load's
// tollgate+policy row serves the same files, so in-process and over-gRPC
// figures are of one policy. The benchmark request (GET /api/v1/items with
// roles admin and reader) is allowed; GET /api/v1/reports is not, which the
// warm-up checks so the policy is known to decide.
const benchPolicyDir = "../test/load/testdata/rbac"

// benchPipelineLogger discards, as realPipeline's does.
func benchPipelineLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// benchPolicyEngine compiles the policy in benchPolicyDir, as Tollgate
// loads policy.paths. The evaluation timeout is 10s instead of
// 50ms: the benchmark measures cost, and on a shared machine one of a
// million evaluations can be descheduled for longer than 50ms (the guard
// costs the same whatever its duration).
func benchPolicyEngine(b *testing.B, cache policy.DecisionCacheConfig) *policy.Engine {
	b.Helper()
	e, err := policy.New(policy.Config{Paths: []string{benchPolicyDir}, Timeout: 10 * time.Second, DecisionCache: cache},
		policy.WithLogger(benchPipelineLogger()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// benchKeyring starts a Keyring on a file store in a temp dir with
// Tollgate's defaults (ES256, TTL 60s, reuse cache on), copying the roles
// claim like internal_token.claims: ["roles"].
func benchKeyring(b *testing.B) *keyring.Keyring {
	b.Helper()
	store, err := keyring.NewFileStore(filepath.Join(b.TempDir(), "keys"))
	if err != nil {
		b.Fatal(err)
	}
	k, err := keyring.New(keyring.Config{Issuer: "https://tollgate.internal", Claims: []string{"roles"}}, store,
		keyring.WithLogger(benchPipelineLogger()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = k.Stop(context.Background()); _ = store.Close() })
	return k
}

// benchStagedPipeline is realPipeline (same services, header rules and
// verifier, with its keys served by httptest) with the given stages added.
func benchStagedPipeline(b *testing.B, opts ...Option) (*Checker, string) {
	b.Helper()
	base, tok := realPipeline(b)
	opts = append([]Option{WithLogger(benchPipelineLogger())}, opts...)
	c, err := New(Config{
		Services:      []Service{{Name: "orders", Hosts: []string{"*"}, Audiences: []string{"orders-api"}}},
		ClaimHeaders:  []ClaimHeader{{Claim: "sub", Header: "x-user-id"}, {Claim: "roles", Header: "x-user-roles"}},
		RemoveHeaders: []string{"authorization"},
	}, base.verifier, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return c, tok
}

// benchMintConfig is internal_token's default header, minting for JWT
// callers too (for_jwt: true).
var benchMintConfig = MintConfig{Header: "x-internal-jwt", ForJWT: true}

// runCheckBench warms up with req (which must be allowed, with every
// header in wantHeaders set upstream), then measures Check on it.
func runCheckBench(b *testing.B, srv *GRPCServer, req *authv3.CheckRequest, wantHeaders ...string) {
	b.Helper()
	resp, err := srv.Check(b.Context(), req)
	if err != nil || resp.GetOkResponse() == nil {
		b.Fatalf("warm-up Check = %v, %v; want allowed", resp, err)
	}
	for _, want := range wantHeaders {
		found := false
		for _, h := range resp.GetOkResponse().GetHeaders() {
			found = found || (h.GetHeader().GetKey() == want && h.GetHeader().GetValue() != "")
		}
		if !found {
			b.Fatalf("warm-up Check set upstream %v; want %s", resp.GetOkResponse().GetHeaders(), want)
		}
	}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := srv.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("Check = %v, %v; want allowed", resp, err)
		}
	}
}

// BenchmarkCheckWithPolicy is BenchmarkCheckCachedToken with a typical RBAC
// policy deciding every request, with Tollgate's defaults: the decision
// cache answers every Check after the first (the policy reads the method,
// the path and the roles). Target: the policy adds ≤ 15 µs and ≤ 60
// allocations per Check.
func BenchmarkCheckWithPolicy(b *testing.B) {
	benchCheckWithPolicy(b, policy.DecisionCacheConfig{})
}

// BenchmarkCheckWithPolicyNoCache evaluates the policy on every Check: the
// cost of a decision the cache has not seen (plus, with the cache on, a
// key of ~0.3 µs).
func BenchmarkCheckWithPolicyNoCache(b *testing.B) {
	benchCheckWithPolicy(b, policy.DecisionCacheConfig{Disabled: true})
}

func benchCheckWithPolicy(b *testing.B, cache policy.DecisionCacheConfig) {
	c, tok := benchStagedPipeline(b, WithPolicy(benchPolicyEngine(b, cache)))
	srv := NewGRPCServer(c)
	denied := envoyRequest("orders.example.com", "/api/v1/reports", "Bearer "+tok, nil)
	if resp, err := srv.Check(b.Context(), denied); err != nil || resp.GetDeniedResponse() == nil {
		b.Fatalf("Check(GET /api/v1/reports) = %v, %v; want denied by the policy", resp, err)
	}
	runCheckBench(b, srv, envoyRequest("orders.example.com", "/api/v1/items", "Bearer "+tok, nil))
}

// BenchmarkCheckWithMintReuse is BenchmarkCheckCachedToken plus the
// internal token for the destination, minted by the real keyring (ES256,
// file store) and reused from its cache, which is the steady state: one
// signature per identity and audience per half TTL. Target: ≤ 2 µs added.
func BenchmarkCheckWithMintReuse(b *testing.B) {
	c, tok := benchStagedPipeline(b, WithMinter(benchKeyring(b), benchMintConfig))
	runCheckBench(b, NewGRPCServer(c), envoyRequest("orders.example.com", "/api/v1/items", "Bearer "+tok, nil), benchMintConfig.Header)
}

// BenchmarkCheckSessionMemory is a browser request: a session cookie (next
// to another cookie, which must pass upstream) resolved by the in-memory
// store, and the internal token minted for it and reused. No bearer token
// is sent.
func BenchmarkCheckSessionMemory(b *testing.B) {
	store, err := session.NewMemory(session.Config{}, session.WithLogger(benchPipelineLogger()))
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Stop(context.Background()) })
	id, _, err := store.Create(b.Context(), session.NewSession{Subject: "alice", Claims: map[string]any{"roles": []string{"admin", "reader"}}})
	if err != nil {
		b.Fatal(err)
	}
	c, _ := benchStagedPipeline(b,
		WithSessions(store, SessionConfig{Cookie: session.DefaultCookie, Header: session.DefaultHeader}),
		WithMinter(benchKeyring(b), benchMintConfig))
	req := envoyRequest("orders.example.com", "/api/v1/items", "", map[string]string{"cookie": "lang=en-GB; " + session.DefaultCookie + "=" + id})
	runCheckBench(b, NewGRPCServer(c), req, benchMintConfig.Header, "x-user-id", "cookie")
}
