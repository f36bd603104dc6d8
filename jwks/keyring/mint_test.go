package keyring

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// decodePart decodes one base64url segment of a compact JWS into a map.
func decodePart(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("segment %q: %v", seg, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("segment %s: %v", b, err)
	}
	return m
}

func TestMintClaims(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	k := startKeyring(t, baseConfig(), newFileStore(t), WithClock(clock.Now))
	set := publicSet(t, k)
	now := clock.Now().Unix()

	tests := []struct {
		name   string
		req    MintRequest
		header map[string]any
		claims map[string]any // besides jti, checked separately
	}{
		{
			name: "identity claims copied in; others dropped",
			req: MintRequest{CacheKey: "c1", Subject: "alice", Audience: "orders-api", Claims: map[string]any{
				"roles": []string{"admin", "reader"}, "tenant": "acme", "email": "a@example.com", "groups": []any{"x"},
			}},
			claims: map[string]any{"iss": "https://tollgate.internal", "sub": "alice", "aud": "orders-api",
				"iat": float64(now), "nbf": float64(now), "exp": float64(now + 60),
				"roles": []any{"admin", "reader"}, "tenant": "acme"},
		},
		{
			name: "registered claims in Claims cannot override iss, aud, exp and the rest",
			req: MintRequest{Subject: "bob", Audience: "billing", Claims: map[string]any{
				"iss": "https://evil", "aud": "*", "exp": 9999999999, "nbf": 0, "iat": 0, "sub": "root", "jti": "fixed", "tenant": "t1",
			}},
			claims: map[string]any{"iss": "https://tollgate.internal", "sub": "bob", "aud": "billing",
				"iat": float64(now), "nbf": float64(now), "exp": float64(now + 60), "tenant": "t1"},
		},
		{
			name:   "empty subject omitted, no claims",
			req:    MintRequest{Audience: "svc"},
			claims: map[string]any{"iss": "https://tollgate.internal", "aud": "svc", "iat": float64(now), "nbf": float64(now), "exp": float64(now + 60)},
		},
		{
			name: "claim values needing escapes survive",
			req:  MintRequest{Subject: "a\"b\\c\n\u2028\x01", Audience: "svc", Claims: map[string]any{"tenant": "ü\xff", "roles": map[string]any{"b": 1, "a": []int{1, 2}}}},
			claims: map[string]any{"iss": "https://tollgate.internal", "sub": "a\"b\\c\n\u2028\x01", "aud": "svc",
				"iat": float64(now), "nbf": float64(now), "exp": float64(now + 60), "tenant": "ü\ufffd",
				"roles": map[string]any{"a": []any{float64(1), float64(2)}, "b": float64(1)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := k.Mint(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("Mint = %v", err)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("Mint = %q; want a compact JWS", tok)
			}
			hdr := decodePart(t, parts[0])
			wantHdr := map[string]any{"alg": "ES256", "kid": k.ActiveKID(), "typ": "JWT"}
			if !maps.Equal(hdr, wantHdr) {
				t.Errorf("header = %v; want %v", hdr, wantHdr)
			}
			claims := decodePart(t, parts[1])
			jti, _ := claims["jti"].(string)
			if b, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(b) != 16 {
				t.Errorf("jti = %q; want 128 random bits, base64url", jti)
			}
			delete(claims, "jti")
			gotJSON, _ := json.Marshal(claims)
			wantJSON, _ := json.Marshal(tc.claims)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("claims = %s; want %s", gotJSON, wantJSON)
			}
			if len(decodePart(t, parts[0])) != 3 {
				t.Errorf("header has extra members")
			}
			if _, err := verifyWith(set, tok, "https://tollgate.internal", tc.req.Audience, jwt.WithClock(jwt.ClockFunc(clock.Now))); err != nil {
				t.Errorf("jwx verify = %v; want nil", err)
			}
		})
	}
}

func TestMintRejects(t *testing.T) {
	t.Parallel()
	k := startKeyring(t, baseConfig(), newFileStore(t))
	notStarted, err := New(baseConfig(), newFileStore(t))
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		k    *Keyring
		ctx  context.Context
		req  MintRequest
		want error
	}{
		{"empty audience → invalid audience", k, context.Background(), MintRequest{Subject: "a"}, ErrInvalidAudience},
		{"wildcard audience → invalid audience", k, context.Background(), MintRequest{Subject: "a", Audience: "*"}, ErrInvalidAudience},
		{"before Start → no active key", notStarted, context.Background(), MintRequest{Audience: "svc"}, ErrNoActiveKey},
		{"canceled context → context error", k, canceled, MintRequest{Audience: "svc"}, context.Canceled},
		{"unencodable claim → error", k, context.Background(), MintRequest{Audience: "svc", Claims: map[string]any{"tenant": make(chan int)}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.k.Mint(tc.ctx, tc.req)
			if err == nil || tok != "" {
				t.Fatalf("Mint = %q, %v; want an error", tok, err)
			}
			if reason.Of(err) != reason.SigningUnavailable {
				t.Errorf("reason.Of(Mint) = %s; want %s", reason.Of(err), reason.SigningUnavailable)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Mint = %v; want errors.Is %v", err, tc.want)
			}
		})
	}
}

func TestMintReuse(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	cfg := baseConfig()
	cfg.PublishAhead = 10 * time.Second
	cfg.RotationPeriod = time.Hour
	k := startKeyring(t, cfg, newFileStore(t), WithClock(clock.Now))
	req := MintRequest{CacheKey: "cred-hash", Subject: "alice", Audience: "orders", Claims: map[string]any{"roles": []string{"a"}}}
	ctx := t.Context()
	first, err := k.Mint(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	mint := func() string {
		t.Helper()
		tok, err := k.Mint(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t.Run("same request before half-life → same token", func(t *testing.T) {
		clock.Advance(29 * time.Second)
		if got := mint(); got != first {
			t.Errorf("Mint after 29s = new token; want the cached one")
		}
	})
	variants := []struct {
		name string
		req  MintRequest
	}{
		{"other audience", MintRequest{CacheKey: "cred-hash", Subject: "alice", Audience: "billing", Claims: req.Claims}},
		{"other claims", MintRequest{CacheKey: "cred-hash", Subject: "alice", Audience: "orders", Claims: map[string]any{"roles": []string{"b"}}}},
		{"other subject", MintRequest{CacheKey: "cred-hash", Subject: "mallory", Audience: "orders", Claims: req.Claims}},
		{"other identity", MintRequest{CacheKey: "other", Subject: "alice", Audience: "orders", Claims: req.Claims}},
		{"no cache key", MintRequest{Subject: "alice", Audience: "orders", Claims: req.Claims}},
	}
	for _, v := range variants {
		t.Run(v.name+" → new token", func(t *testing.T) {
			tok, err := k.Mint(ctx, v.req)
			if err != nil {
				t.Fatal(err)
			}
			if tok == first {
				t.Errorf("Mint(%s) = the cached token of another request", v.name)
			}
		})
	}
	t.Run("at half-life → new token", func(t *testing.T) {
		clock.Advance(time.Second) // 30s = TTL/2
		second := mint()
		if second == first {
			t.Fatalf("Mint after 30s = cached token; want a new one")
		}
		if got := mint(); got != second {
			t.Errorf("Mint right after = new token; want the second one reused")
		}
	})
	t.Run("rotation clears the cache", func(t *testing.T) {
		before := mint()
		if _, err := k.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(cfg.PublishAhead)
		ki, err := k.Rotate(ctx)
		if err != nil || ki.State != StateActive {
			t.Fatalf("Rotate = %+v, %v; want a promotion", ki, err)
		}
		if n := k.cache.Load().len(); n != 0 {
			t.Errorf("cache holds %d entries after rotation; want 0", n)
		}
		after := mint()
		if after == before || kidOf(t, after) != ki.KID {
			t.Errorf("Mint after rotation: kid %s; want a new token by %s", kidOf(t, after), ki.KID)
		}
	})
	t.Run("revocation clears the cache", func(t *testing.T) {
		before := mint()
		old := k.ActiveKID()
		if err := k.Revoke(ctx, old); err != nil {
			t.Fatal(err)
		}
		if n := k.cache.Load().len(); n != 0 {
			t.Errorf("cache holds %d entries after revocation; want 0", n)
		}
		after := mint()
		if after == before || kidOf(t, after) == old {
			t.Errorf("Mint after revoking %s returned a token signed by it", old)
		}
	})
}

func TestMintCacheBounded(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.MintCacheEntries = 64
	k := startKeyring(t, cfg, newFileStore(t))
	for i := range 1000 {
		if _, err := k.Mint(t.Context(), MintRequest{CacheKey: string(rune('a'+i%26)) + strings.Repeat("x", i), Audience: "svc"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.cache.Load().len(); n > 64 {
		t.Errorf("cache holds %d entries; want ≤ 64", n)
	}
}

func TestMintAlgorithms(t *testing.T) {
	t.Parallel()
	for _, alg := range []Algorithm{ES256, RS256, EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			cfg.Algorithm = alg
			k := startKeyring(t, cfg, newFileStore(t))
			set := publicSet(t, k)
			tok, err := k.Mint(t.Context(), MintRequest{Subject: "s", Audience: "a", Claims: map[string]any{"tenant": "t"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := decodePart(t, strings.Split(tok, ".")[0])["alg"]; got != string(alg) {
				t.Errorf("alg = %v; want %s", got, alg)
			}
			if _, err := verifyWith(set, tok, cfg.Issuer, "a"); err != nil {
				t.Errorf("jwx verify = %v", err)
			}
		})
	}
}

func TestMintConcurrentWithRevoke(t *testing.T) {
	t.Parallel()
	k := startKeyring(t, baseConfig(), newFileStore(t))
	ctx := t.Context()
	revoked := k.ActiveKID()
	var done sync.WaitGroup
	var mu sync.Mutex
	var after []string
	var revokedReturned bool
	stop := make(chan struct{})
	for g := range 4 {
		done.Add(1)
		go func() {
			defer done.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				started := revokedReturned
				mu.Unlock()
				tok, err := k.Mint(ctx, MintRequest{CacheKey: string(rune('a' + g)), Audience: "svc"})
				if err != nil {
					t.Error(err)
					return
				}
				if started {
					mu.Lock()
					after = append(after, tok)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := k.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	revokedReturned = true
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	done.Wait()
	if len(after) == 0 {
		t.Fatal("no token minted after Revoke")
	}
	for _, tok := range after {
		if kidOf(t, tok) == revoked {
			t.Fatalf("a Mint started after Revoke returned a token signed by the revoked key")
		}
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", "quote\"back\\slash", "ctl\x00\x1f\t\r\n", "ünï©ødé", "bad\xff\xfeutf8", "sep\u2028\u2029", "<html>&"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil {
			t.Errorf("appendJSONString(%q) is not JSON: %v", s, err)
			continue
		}
		var want string
		b, _ := json.Marshal(s)
		_ = json.Unmarshal(b, &want)
		if got != want {
			t.Errorf("appendJSONString(%q) decodes to %q; want %q", s, got, want)
		}
	}
	if got := slices.Collect(maps.Keys(map[string]int{})); len(got) != 0 {
		t.Fatal("unreachable")
	}
}
