package jwks

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

func TestTokenCache_Bounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		maxEntries int
		maxBytes   int64
		adds       int
		entrySize  int64
		wantMaxLen int
	}{
		{"entry bound smaller than the shard count → at most maxEntries", 10, 1 << 30, 100, 600, 10},
		{"large entry bound → at most maxEntries", 5000, 1 << 30, 20000, 600, 5000},
		{"byte bound → at most maxBytes/entrySize", 100000, 60000, 1000, 600, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTokenCache(tt.maxEntries, tt.maxBytes)
			k := &verifyKey{}
			for i := range tt.adds {
				sum := sha256.Sum256(fmt.Appendf(nil, "token-%d", i))
				c.add(&sum, &Token{}, k, 1, tt.entrySize)
			}
			if got := c.len(); got > tt.wantMaxLen || got == 0 {
				t.Errorf("len after %d adds = %d; want 1..%d", tt.adds, got, tt.wantMaxLen)
			}
			if got := c.size(); got > tt.maxBytes {
				t.Errorf("bytes after %d adds = %d; want ≤ %d", tt.adds, got, tt.maxBytes)
			}
			last := sha256.Sum256(fmt.Appendf(nil, "token-%d", tt.adds-1))
			if c.get(&last) == nil {
				t.Errorf("get(newest) = nil; want the newest entry kept (FIFO eviction)")
			}
			first := sha256.Sum256([]byte("token-0"))
			if c.get(&first) != nil {
				t.Errorf("get(oldest) = entry; want it evicted")
			}
		})
	}
}

func TestTokenCache_SkipsEntriesLargerThanAShard(t *testing.T) {
	t.Parallel()
	c := newTokenCache(10, 1000)
	sum := sha256.Sum256([]byte("x"))
	c.add(&sum, &Token{}, &verifyKey{}, 1, 2000)
	if c.get(&sum) != nil || c.len() != 0 {
		t.Errorf("add(entry over the byte budget) kept it; want it skipped")
	}
}

func TestTokenCache_RevokedKeyHidesAndPurgesEntries(t *testing.T) {
	t.Parallel()
	c := newTokenCache(1000, 1<<20)
	keep, drop := &verifyKey{kid: "keep"}, &verifyKey{kid: "drop"}
	var sums [][32]byte
	for i := range 20 {
		sum := sha256.Sum256(fmt.Appendf(nil, "t%d", i))
		k := keep
		if i%2 == 0 {
			k = drop
		}
		c.add(&sum, &Token{}, k, 1, 100)
		sums = append(sums, sum)
	}
	drop.revoked.Store(true)
	if c.get(&sums[0]) != nil {
		t.Errorf("get(token of revoked key) = entry; want nil")
	}
	c.purgeRevoked()
	if got := c.len(); got != 10 {
		t.Errorf("len after purgeRevoked = %d; want 10", got)
	}
	if got := c.size(); got != 1000 {
		t.Errorf("bytes after purgeRevoked = %d; want 1000", got)
	}
}

func TestVerify_CacheServesVerifiedTokensAndChecksExpiry(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	clk := newClock(testNow)
	v := singleIssuer(t, p, clk, func(ic *IssuerConfig) { ic.Leeway = 5 * time.Second })
	waitReady(t, v)

	raw := s.mint(t, claims(issA, set("exp", testNow.Unix()+60)), nil)
	first, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify(token) = %v; want a token", err)
	}
	second, err := v.Verify(t.Context(), raw)
	if err != nil || second != first {
		t.Errorf("Verify(same token) = %p, %v; want the cached %p", second, err, first)
	}
	if got := v.cache.len(); got != 1 {
		t.Errorf("cache entries = %d; want 1", got)
	}
	clk.Advance(64 * time.Second) // exp + leeway not yet reached
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify(cached token within leeway) = %v; want a token", err)
	}
	clk.Advance(time.Second) // now == exp + leeway
	if _, err := v.Verify(t.Context(), raw); code(t, err) != reason.TokenExpired {
		t.Errorf("Verify(cached token past exp+leeway) = %v; want %s", err, reason.TokenExpired)
	}
	if got := v.cache.len(); got != 0 {
		t.Errorf("cache entries after expiry = %d; want 0", got)
	}
}

func TestVerify_RejectionsAreNotCached(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	clk := newClock(testNow)
	v := singleIssuer(t, p, clk, nil)
	waitReady(t, v)
	early := s.mint(t, claims(issA, set("nbf", testNow.Unix()+60)), nil)
	for range 2 {
		if _, err := v.Verify(t.Context(), early); code(t, err) != reason.TokenNotYetValid {
			t.Fatalf("Verify(early token) = %v; want %s", err, reason.TokenNotYetValid)
		}
	}
	if got := v.cache.len(); got != 0 {
		t.Errorf("cache entries after rejections = %d; want 0", got)
	}
	clk.Advance(time.Minute)
	if _, err := v.Verify(t.Context(), early); err != nil {
		t.Errorf("Verify(token once nbf passed) = %v; want a token", err)
	}
}

func TestVerify_CacheEntryDroppedWhenKeyLeavesTheSet(t *testing.T) {
	t.Parallel()
	k := keys()
	old := signer{k.ec256, "ES256", "old"}
	next := signer{k.ec256b, "ES256", "new"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "old"}))
	v := singleIssuer(t, p, newClock(testNow), func(ic *IssuerConfig) { ic.UnknownKeyRefreshInterval = time.Hour })
	waitReady(t, v)

	raw := old.mint(t, claims(issA), nil)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Fatalf("Verify(token of old key) = %v; want a token", err)
	}
	// The IdP replaces the key; a token with the new kid triggers the refresh.
	p.setKeys(jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "new"}))
	if _, err := v.Verify(t.Context(), next.mint(t, claims(issA), nil)); err != nil {
		t.Fatalf("Verify(token of new key) = %v; want a token", err)
	}
	if got := v.cache.len(); got != 1 {
		t.Errorf("cache entries after rotation = %d; want 1 (only the new key's token)", got)
	}
	if _, err := v.Verify(t.Context(), raw); code(t, err) != reason.TokenUnknownKey {
		t.Errorf("Verify(cached token of removed key) = %v; want %s", err, reason.TokenUnknownKey)
	}
}

func TestVerify_CacheKeepsEntriesOfKeysThatSurviveARefresh(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	v := singleIssuer(t, p, newClock(testNow), nil)
	waitReady(t, v)
	raw := s.mint(t, claims(issA), nil)
	first, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	p.setKeys(
		jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}),
		jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "k2"}),
	)
	if _, err := v.Verify(t.Context(), s.withKid("k3").mint(t, claims(issA), nil)); code(t, err) != reason.TokenUnknownKey {
		t.Fatalf("Verify(unknown kid) = %v; want %s", err, reason.TokenUnknownKey)
	}
	if got, err := v.Verify(t.Context(), raw); err != nil || got != first {
		t.Errorf("Verify(cached token after refresh keeping its key) = %p, %v; want cached %p", got, err, first)
	}
}

func TestVerify_CacheRespectsMaxEntries(t *testing.T) {
	t.Parallel()
	k := keys()
	s := signer{k.ec256, "ES256", "k1"}
	p := newIDP(t, jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "k1"}))
	v := newVerifier(t, Config{
		Issuers:         []IssuerConfig{{Issuer: issA, JWKSURI: p.jwksURI(), Algorithms: []string{"ES256"}}},
		CacheMaxEntries: 8,
	}, WithClock(newClock(testNow).Now))
	waitReady(t, v)
	for i := range 30 {
		if _, err := v.Verify(t.Context(), s.mint(t, claims(issA, set("jti", fmt.Sprint(i))), nil)); err != nil {
			t.Fatalf("Verify(token %d) = %v", i, err)
		}
	}
	if got := v.cache.len(); got > 8 {
		t.Errorf("cache entries after 30 tokens with CacheMaxEntries 8 = %d; want ≤ 8", got)
	}
}
