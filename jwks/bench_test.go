package jwks

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// benchClaims is a realistic access-token payload (~600 bytes of token).
func benchClaims(i int) map[string]any {
	return claims(issA,
		set("jti", fmt.Sprintf("b1c2d3e4-%08d", i)),
		set("scope", "openid profile email orders:read orders:write"),
		set("azp", "checkout-frontend"),
		set("email", "alice@example.com"),
		set("roles", []string{"customer", "beta"}),
		set("aud", []string{"orders", "payments"}),
	)
}

// benchVerifier returns a Verifier trusting issuer A with ES256, RS256 and
// EdDSA keys. cacheEntries 1 makes every Verify of a rotating token pool a
// cache miss that still pays for the cache insert and eviction.
func benchVerifier(b *testing.B, cacheEntries int, opts ...Option) *Verifier {
	b.Helper()
	k := keys()
	p := newIDP(b,
		jwkJSON(b, &k.ec256.PublicKey, map[string]any{"kid": "ec1"}),
		jwkJSON(b, &k.rsa.PublicKey, map[string]any{"kid": "rsa1"}),
		jwkJSON(b, k.ed.Public(), map[string]any{"kid": "ed1"}),
	)
	v := newVerifier(b, Config{
		Issuers:         []IssuerConfig{{Issuer: issA, JWKSURI: p.jwksURI(), Algorithms: []string{"ES256", "RS256", "EdDSA"}}},
		CacheMaxEntries: cacheEntries,
	}, append([]Option{WithClock(newClock(testNow).Now)}, opts...)...)
	waitReady(b, v)
	return v
}

// tokenPool mints n distinct tokens once per signer.
var tokenPools = map[string][]string{}

func tokenPool(b *testing.B, s signer, n int) []string {
	b.Helper()
	if p, ok := tokenPools[s.alg]; ok {
		return p
	}
	p := make([]string, n)
	for i := range p {
		p[i] = s.mint(b, benchClaims(i), nil)
	}
	tokenPools[s.alg] = p
	return p
}

func benchFirst(b *testing.B, s signer, poolSize int) {
	v := benchVerifier(b, 1)
	pool := tokenPool(b, s, poolSize)
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, pool[i%len(pool)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyES256First measures a full first verification: hash,
// cache miss, parse, ES256 signature check, claims, cache insert. Compare
// with BenchmarkBareECDSAVerify.
func BenchmarkVerifyES256First(b *testing.B) {
	benchFirst(b, signer{keys().ec256, "ES256", "ec1"}, 1024)
}

// BenchmarkBareECDSAVerify is the floor for BenchmarkVerifyES256First:
// SHA-256 of the same signing input and ecdsa.Verify with the same key,
// r and s already decoded.
func BenchmarkBareECDSAVerify(b *testing.B) {
	k := keys()
	raw := signer{k.ec256, "ES256", "ec1"}.mint(b, benchClaims(0), nil)
	dot := strings.LastIndexByte(raw, '.')
	input := []byte(raw[:dot])
	sig, err := enc.DecodeString(raw[dot+1:])
	if err != nil {
		b.Fatal(err)
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	pub := &k.ec256.PublicKey
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		digest := sha256.Sum256(input)
		if !ecdsa.Verify(pub, digest[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}

func BenchmarkVerifyRS256First(b *testing.B) {
	benchFirst(b, signer{keys().rsa, "RS256", "rsa1"}, 128)
}

func BenchmarkVerifyEdDSAFirst(b *testing.B) {
	benchFirst(b, signer{keys().ed, "EdDSA", "ed1"}, 1024)
}

// BenchmarkVerifyCached measures Verify of an already-verified token: the
// hot path of every request.
func BenchmarkVerifyCached(b *testing.B) {
	v := benchVerifier(b, 0)
	raw := signer{keys().ec256, "ES256", "ec1"}.mint(b, benchClaims(0), nil)
	ctx := b.Context()
	if _, err := v.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedWithMetrics adds the hit counter.
func BenchmarkVerifyCachedWithMetrics(b *testing.B) {
	v := benchVerifier(b, 0, WithRegisterer(prometheus.NewRegistry()))
	raw := signer{keys().ec256, "ES256", "ec1"}.mint(b, benchClaims(0), nil)
	ctx := b.Context()
	if _, err := v.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel measures cache hits from all cores over a
// working set of many tokens.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	v := benchVerifier(b, 0)
	pool := tokenPool(b, signer{keys().ec256, "ES256", "ec1"}, 1024)
	ctx := b.Context()
	for _, raw := range pool {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := v.Verify(ctx, pool[i%len(pool)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// Rejections must stay cheap: they are what an attacker can send at will.
func BenchmarkVerifyReject(b *testing.B) {
	k := keys()
	v := benchVerifier(b, 0)
	good := signer{k.ec256, "ES256", "ec1"}.mint(b, benchClaims(0), nil)
	parts := strings.Split(good, ".")
	cases := []struct {
		name  string
		token string
	}{
		{"malformed", "not-a-token"},
		{"unknown-issuer", signer{k.ec256, "ES256", "ec1"}.mint(b, claims("https://evil.test"), nil)},
		{"bad-signature", parts[0] + "." + parts[1] + "." + enc.EncodeToString(make([]byte, 64))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := v.Verify(ctx, c.token); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
