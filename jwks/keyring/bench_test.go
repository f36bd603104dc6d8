package keyring

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"strconv"
	"testing"
)

var benchClaims = map[string]any{"roles": []string{"admin", "reader"}, "tenant": "acme", "email": "ignored@example.com"}

func benchKeyring(b *testing.B, alg Algorithm, store Store) *Keyring {
	b.Helper()
	cfg := baseConfig()
	cfg.Algorithm = alg
	if store == nil {
		store = newFileStore(b)
	}
	return startKeyring(b, cfg, store)
}

// benchFresh mints a token that is never in the reuse cache: a new
// identity each time (cache lookup, miss, signature, insert with
// eviction once full).
func benchFresh(b *testing.B, k *Keyring) {
	b.Helper()
	ctx := b.Context()
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "cred-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := k.Mint(ctx, MintRequest{CacheKey: keys[i&(len(keys)-1)] + strconv.Itoa(i>>16), Subject: "alice", Audience: "orders-api", Claims: benchClaims}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintES256Fresh(b *testing.B) { benchFresh(b, benchKeyring(b, ES256, nil)) }

func BenchmarkMintRS256Fresh(b *testing.B) { benchFresh(b, benchKeyring(b, RS256, nil)) }

func BenchmarkMintEdDSAFresh(b *testing.B) { benchFresh(b, benchKeyring(b, EdDSA, nil)) }

// BenchmarkBareECDSASign is the floor for BenchmarkMintES256Fresh: hashing
// a signing input of a typical internal token's size and signing the
// digest with crypto/ecdsa, nothing else.
func BenchmarkBareECDSASign(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	input := make([]byte, 330)
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.Sum256(input)
		if _, err := ecdsa.SignASN1(rand.Reader, priv, h[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintReuse(b *testing.B) {
	k := benchKeyring(b, ES256, nil)
	ctx := b.Context()
	req := MintRequest{CacheKey: "cred-hash", Subject: "alice", Audience: "orders-api", Claims: benchClaims}
	if _, err := k.Mint(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Mint(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintReuseParallel(b *testing.B) {
	k := benchKeyring(b, ES256, nil)
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			req := MintRequest{CacheKey: "cred-" + strconv.Itoa(i%64), Subject: "alice", Audience: "orders-api", Claims: benchClaims}
			if _, err := k.Mint(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
