package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/protobuf/proto"
)

// issuerBody is the config after the server section for the internal
// token tests: the IdP p, the orders service whose internal tokens have
// audience orders-internal, then sections (internal_token and keys).
func issuerBody(p *idp, sections string) string {
	return `log: {level: "info", format: "json"}
issuers:
` + p.issuerConfig() + `services:
  - name: "orders"
    hosts: ["orders.example.com"]
    path_prefixes: ["/"]
    audiences: ["orders-api"]
    internal_audience: "orders-internal"
    auth: "required"
headers:
  claims_to_headers: {sub: "x-user-id"}
  remove: ["authorization"]
` + sections
}

// signJWT is sign without a testing.T, for load goroutines.
func signJWT(k *signingKey, c claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	if err := h.Set(jws.KeyIDKey, k.kid); err != nil {
		return "", err
	}
	tok, err := jws.Sign(payload, jws.WithKey(k.alg, k.priv, jws.WithProtectedHeaders(h)))
	return string(tok), err
}

// bearerRequest clones base with request ID id and "Authorization:
// Bearer tok"; it needs no testing.T.
func bearerRequest(base *authv3.CheckRequest, id, tok string) *authv3.CheckRequest {
	req := proto.Clone(base).(*authv3.CheckRequest)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Id = id
	h.Headers["x-request-id"] = id
	h.Headers["authorization"] = "Bearer " + tok
	return req
}

// mintFor sends a Check with a bearer JWT and returns the internal token
// the OkResponse sets.
func mintFor(t *testing.T, tg *tgProc, reqID, jwt string) string {
	t.Helper()
	resp := tg.check(t, checkRequest(t, ordersHost, reqID, jwt, nil))
	requireAllowed(t, "bearer JWT", resp)
	return upstreamHeader(t, resp, "x-internal-jwt")
}

// jwtToken is the internal token for a bearer JWT of sub from validClaims
// with the given ttl and configured claims.
func jwtToken(sub string, ttl time.Duration, claims map[string]any) wantToken {
	return wantToken{iss: testIssuer, aud: "orders-internal", sub: sub, ttl: ttl, claims: claims}
}

// pollUntil calls cond every interval until it returns true or bound has
// passed since start; it returns how long that took.
func pollUntil(t *testing.T, bound, interval time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(interval)
	}
}

// loadStats collects what the load workers saw.
type loadStats struct {
	mu       sync.Mutex
	verified int
	failures []string
	kids     []string // signing kids in order of first appearance
	firstAt  []time.Time
}

func (s *loadStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fmt.Sprintf(format, args...))
}

// saw records a verified token of kid and returns kid's index in order
// of first appearance.
func (s *loadStats) saw(kid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verified++
	i := slices.Index(s.kids, kid)
	if i < 0 {
		s.kids = append(s.kids, kid)
		s.firstAt = append(s.firstAt, time.Now())
		i = len(s.kids) - 1
	}
	return i
}

func (s *loadStats) snapshot() (kids []string, lastNew time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.firstAt); n > 0 {
		lastNew = s.firstAt[n-1]
	}
	return slices.Clone(s.kids), lastNew
}

// TestIssuerRotationUnderLoad rotates the file store's keys every 5s under
// continuous Checks while a downstream verifier caches the JWKS exactly
// as Cache-Control allows: no internal token may fail. Then `tollgate keys
// revoke` withdraws the active key.
func TestIssuerRotationUnderLoad(t *testing.T) {
	t.Parallel()
	k := newES256Key(t, "load-1")
	p := newIDP(t, 300, k)
	const ttl, rotation, publishAhead = 2 * time.Second, 5 * time.Second, 4 * time.Second
	tg := launchTollgate(t, tgOptions{body: issuerBody(p, `internal_token:
  enabled: true
  issuer: "`+testIssuer+`"
  ttl: "2s"
  claims: ["roles"]
keys:
  store: "file"
  dir: "keys"
  rotation_period: "5s"
  publish_ahead: "4s"
  grace_period: "4s"
`)})
	want := func(sub string) wantToken {
		return jwtToken(sub, ttl, map[string]any{"roles": []string{"reader", "writer"}})
	}
	v := &cachingVerifier{url: tg.jwksURL()}

	t.Run("JWKS max-age ≤ publish_ahead", func(t *testing.T) {
		status, h, _, err := httpGet(t.Context(), tg.jwksURL(), nil)
		age, ok := maxAge(h.Get("Cache-Control"))
		if err != nil || status != http.StatusOK || !ok || age <= 0 || age > publishAhead {
			t.Fatalf("GET jwks.json = %d, Cache-Control %q, %v; want 200 with 0 < max-age ≤ publish_ahead %v", status, h.Get("Cache-Control"), err, publishAhead)
		}
		t.Logf("Cache-Control: %s", h.Get("Cache-Control"))
	})

	var stats loadStats
	t.Run("continuous Checks across three rotations → every internal token verifies with the cached JWKS", func(t *testing.T) {
		const workers, pause, deadline = 3, 15 * time.Millisecond, 40 * time.Second
		base := checkRequest(t, ordersHost, "load", "", nil)
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		defer cancel()
		fixed := sign(t, k, validClaims(p.issuer()).with(claims{"sub": "load-2"}), nil)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				sub := fmt.Sprintf("load-%d", w)
				last := -1
				for i := 0; ctx.Err() == nil; i++ {
					// Workers 0 and 1 send a new JWT every time (a fresh
					// mint); worker 2 repeats one (the reuse cache).
					jwt := fixed
					if w < 2 {
						var err error
						if jwt, err = signJWT(k, validClaims(p.issuer()).with(claims{"sub": sub})); err != nil {
							stats.fail("sign: %v", err)
							return
						}
					}
					cctx, ccancel := context.WithTimeout(ctx, callTimeout)
					resp, err := tg.client.Check(cctx, bearerRequest(base, fmt.Sprintf("load-%d-%d", w, i), jwt))
					ccancel()
					if ctx.Err() != nil {
						return
					}
					if err != nil || !allowed(resp) {
						stats.fail("worker %d Check %d = %s, %v; want allowed", w, i, describe(resp), err)
						continue
					}
					h, ok := headerValue(resp.GetOkResponse().GetHeaders(), "x-internal-jwt")
					if !ok {
						stats.fail("worker %d Check %d: no x-internal-jwt", w, i)
						continue
					}
					kid, err := v.verify(ctx, h.GetHeader().GetValue(), want(sub), time.Now())
					if err != nil {
						if ctx.Err() == nil {
							stats.fail("worker %d Check %d: %v", w, i, err)
						}
						continue
					}
					if idx := stats.saw(kid); idx < last {
						stats.fail("worker %d Check %d: signed by key #%d after key #%d signed; want no return to an older key", w, i, idx, last)
					} else {
						last = idx
					}
					time.Sleep(pause)
				}
			})
		}
		// Three rotations: a fourth signing key, then a second more.
		for ctx.Err() == nil {
			kids, lastNew := stats.snapshot()
			if len(kids) >= 4 && time.Since(lastNew) > time.Second {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		wg.Wait()

		stats.mu.Lock()
		defer stats.mu.Unlock()
		v.mu.Lock()
		fetches, revalidated := v.fetches, v.notModded
		v.mu.Unlock()
		t.Logf("%d internal tokens verified, %d signing keys %v, JWKS fetched %d times (+%d 304s)", stats.verified, len(stats.kids), stats.kids, fetches, revalidated)
		for i, f := range stats.failures {
			if i == 10 {
				t.Errorf("… and %d more failures", len(stats.failures)-10)
				break
			}
			t.Error(f)
		}
		if len(stats.kids) < 4 {
			t.Errorf("signing keys seen = %d; want at least 4 (three rotations) within %v", len(stats.kids), deadline)
		}
		if stats.verified < 200 {
			t.Errorf("internal tokens verified = %d; want at least 200 under continuous load", stats.verified)
		}
		if fetches < 3 {
			t.Errorf("verifier JWKS fetches = %d; want the cache to expire and refetch at least 3 times", fetches)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("tollgate keys revoke KID → the key leaves the JWKS, signs nothing more, and its tokens stop verifying", func(t *testing.T) {
		tokA := mintFor(t, tg, "revoke-before", sign(t, k, validClaims(p.issuer()).with(claims{"sub": "ruth"}), nil))
		kidA, iatA := tokenKID(t, tokA), tokenIAT(t, tokA)
		if _, err := v.verify(t.Context(), tokA, want("ruth"), iatA); err != nil {
			t.Fatalf("before the revocation: %v; want the token to verify", err)
		}

		code, out, errOut := runCLI(t, "keys", "revoke", kidA, "--config", tg.cfgPath)
		if code != 0 || !strings.Contains(out, "key "+kidA+" revoked") {
			t.Fatalf("tollgate keys revoke %s = exit %d, stdout %q, stderr %q; want exit 0 and \"key %s revoked\"", kidA, code, out, errOut, kidA)
		}
		// The server sees file-store changes at its next poll (keyring
		// PollInterval, 5s).
		took := pollUntil(t, 8*time.Second, 100*time.Millisecond, "served JWKS drops the revoked kid", func() bool {
			return !slices.Contains(jwksKIDs(t, tg.jwksURL()), kidA)
		})
		t.Logf("the server stopped publishing %s %v after the CLI revoked it", kidA, took.Round(time.Millisecond))

		for i := range 10 {
			tok := mintFor(t, tg, fmt.Sprintf("revoke-after-%d", i), sign(t, k, validClaims(p.issuer()).with(claims{"sub": "ruth"}), nil))
			if kid := tokenKID(t, tok); kid == kidA {
				t.Fatalf("token minted after the server dropped %s is signed by it; want another key", kidA)
			}
			// The new active key was not published ahead: verify with
			// the JWKS as served now, not the verifier's cache.
			verifyWithServedJWKS(t, tg, tok, want("ruth"))
		}

		// The verifier refreshes once its max-age has passed.
		v.mu.Lock()
		wait := time.Until(v.expires)
		v.mu.Unlock()
		time.Sleep(max(wait, 0) + 50*time.Millisecond)
		set, err := v.keySet(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := set.LookupKeyID(kidA); ok {
			t.Errorf("verifier's refreshed JWKS still has revoked kid %s", kidA)
		}
		if _, err := v.verify(t.Context(), tokA, want("ruth"), iatA); err == nil {
			t.Errorf("token signed by revoked key %s still verifies after the verifier refreshed; want failure", kidA)
		}

		code, out, errOut = runCLI(t, "keys", "list", "--config", tg.cfgPath)
		row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(kidA) + `\s.*$`).FindString(out)
		if code != 0 || !strings.Contains(row, "revoked") {
			t.Errorf("tollgate keys list = exit %d, stdout %q, stderr %q; want %s listed as revoked", code, out, errOut, kidA)
		}
	})
}

// TestIssuerSharedRedisKeyStore runs two replicas on one Redis key store.
func TestIssuerSharedRedisKeyStore(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	k := newES256Key(t, "shared-1")
	p := newIDP(t, 300, k)
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	kekFile := filepath.Join(t.TempDir(), "kek")
	writeFile(t, kekFile, base64.StdEncoding.EncodeToString(kek)+"\n")
	body := issuerBody(p, fmt.Sprintf(`internal_token: {enabled: true, issuer: %q, ttl: "60s"}
keys:
  store: "redis"
  publish_ahead: "2s"
  redis: {addrs: [%q], kek_file: %q}
`, testIssuer, r.addr, kekFile))
	a := launchTollgate(t, tgOptions{body: body})
	b := launchTollgate(t, tgOptions{body: body})
	replicas := map[string]*tgProc{"A": a, "B": b}
	want := jwtToken("alice", time.Minute, nil)
	jwt := func(t *testing.T) string { return sign(t, k, validClaims(p.issuer()), nil) }

	t.Run("a token minted by one replica verifies with the JWKS the other serves, both ways", func(t *testing.T) {
		ta := mintFor(t, a, "shared-a", jwt(t))
		tb := mintFor(t, b, "shared-b", jwt(t))
		if ka, kb := verifyWithServedJWKS(t, b, ta, want), verifyWithServedJWKS(t, a, tb, want); ka != kb {
			t.Errorf("signing kid on A = %s, on B = %s; want one active key in the shared store", ka, kb)
		}
	})

	t.Run("both replicas publish the same document (same ETag)", func(t *testing.T) {
		_, ha, _, errA := httpGet(t.Context(), a.jwksURL(), nil)
		_, hb, _, errB := httpGet(t.Context(), b.jwksURL(), nil)
		if errA != nil || errB != nil || ha.Get("ETag") == "" || ha.Get("ETag") != hb.Get("ETag") {
			t.Errorf("JWKS ETag on A = %q, on B = %q (%v, %v); want equal", ha.Get("ETag"), hb.Get("ETag"), errA, errB)
		}
	})

	var next string
	t.Run("tollgate keys rotate --config → both replicas publish the next key within 2s", func(t *testing.T) {
		code, out, errOut := runCLI(t, "keys", "rotate", "--config", a.cfgPath)
		m := regexp.MustCompile(`key (\S+) is published and becomes active at`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("tollgate keys rotate = exit %d, stdout %q, stderr %q; want exit 0 and a published next key", code, out, errOut)
		}
		next = m[1]
		for name, tg := range replicas {
			took := pollUntil(t, 2*time.Second, 50*time.Millisecond, "replica "+name+" publishes "+next, func() bool {
				return slices.Contains(jwksKIDs(t, tg.jwksURL()), next)
			})
			t.Logf("replica %s published the next key %v after rotate", name, took.Round(time.Millisecond))
		}
	})
	if next == "" {
		return
	}

	t.Run("once publish_ahead has passed the next key signs on both replicas; tokens verify across them", func(t *testing.T) {
		for name, tg := range replicas {
			other := a
			if tg == a {
				other = b
			}
			var tok string
			took := pollUntil(t, 6*time.Second, 100*time.Millisecond, "replica "+name+" signs with "+next, func() bool {
				tok = mintFor(t, tg, "shared-next-"+name, jwt(t))
				return tokenKID(t, tok) == next
			})
			t.Logf("replica %s signs with the next key %v after the previous step", name, took.Round(time.Millisecond))
			verifyWithServedJWKS(t, other, tok, want)
		}
	})

	t.Run("private keys are sealed in Redis: no PEM and no private JWK member in any value", func(t *testing.T) {
		db := r.dump(t)
		sealed := false
		for key, vals := range db {
			all := strings.Join(vals, "\n")
			if strings.Contains(all, "PRIVATE KEY") || strings.Contains(all, `"d":`) {
				t.Errorf("redis key %q holds private key material in clear", key)
			}
			sealed = sealed || strings.Contains(all, "sealed_key")
		}
		if !sealed {
			t.Errorf("redis keys %v: no sealed_key found; want the key store there", keysOf(db))
		}
	})
}

// TestIssuerPKCS11 keeps the signing keys in a SoftHSM2 token.
func TestIssuerPKCS11(t *testing.T) {
	t.Parallel()
	hsm := newSoftHSM(t, "tollgate-e2e")
	k := newES256Key(t, "hsm-1")
	p := newIDP(t, 300, k)
	tg := launchTollgate(t, tgOptions{env: hsm.env, body: issuerBody(p, fmt.Sprintf(`internal_token: {enabled: true, issuer: %q, ttl: "60s"}
keys:
  store: "pkcs11"
  publish_ahead: "2s"
  pkcs11:
    module: %q
    token_label: %q
    pin_file: %q
    state_file: "keys-state.json"
`, testIssuer, softHSMModule, hsm.label, hsm.pinFile))})
	want := jwtToken("alice", time.Minute, nil)
	jwt := func(t *testing.T) string { return sign(t, k, validClaims(p.issuer()), nil) }

	var first string
	t.Run("Check → the internal token signed inside the token verifies with the published JWKS", func(t *testing.T) {
		first = verifyWithServedJWKS(t, tg, mintFor(t, tg, "hsm-0", jwt(t)), want)
		_, body := fetchJWKS(t, tg.jwksURL())
		assertPublicOnly(t, body)
	})

	var next string
	t.Run("tollgate keys rotate --config → the server publishes the next key", func(t *testing.T) {
		code, out, errOut := runCLIEnv(t, hsm.env, "keys", "rotate", "--config", tg.cfgPath)
		m := regexp.MustCompile(`key (\S+) is published and becomes active at`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("tollgate keys rotate = exit %d, stdout %q, stderr %q; want exit 0 and a published next key", code, out, errOut)
		}
		next = m[1]
		// No notifications from a PKCS #11 store: the server polls (5s).
		took := pollUntil(t, 8*time.Second, 100*time.Millisecond, "server publishes "+next, func() bool {
			return slices.Contains(jwksKIDs(t, tg.jwksURL()), next)
		})
		t.Logf("server published the next key %v after rotate", took.Round(time.Millisecond))
	})
	if next == "" {
		return
	}

	t.Run("once publish_ahead has passed the next key signs; its tokens verify", func(t *testing.T) {
		var tok string
		pollUntil(t, 8*time.Second, 100*time.Millisecond, "server signs with "+next, func() bool {
			tok = mintFor(t, tg, "hsm-next", jwt(t))
			return tokenKID(t, tok) == next
		})
		verifyWithServedJWKS(t, tg, tok, want)
		if kids := jwksKIDs(t, tg.jwksURL()); !slices.Contains(kids, first) {
			t.Errorf("JWKS kids = %v; want the retired key %s still published for the grace period", kids, first)
		}
	})

	t.Run("the state file beside the token holds no key material", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(tg.cfgPath), "keys-state.json"))
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); !strings.Contains(s, next) || strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, `"d":`) {
			t.Errorf("keys-state.json = %s; want key metadata naming %s and no private key material", s, next)
		}
	})
}

// TestIssuerPublishedDocuments checks the JWKS and discovery documents for
// each signing algorithm.
func TestIssuerPublishedDocuments(t *testing.T) {
	t.Parallel()
	k := newES256Key(t, "docs-1")
	p := newIDP(t, 300, k)
	for _, tc := range []struct {
		alg, kty string
	}{
		{"ES256", "EC"},
		{"RS256", "RSA"},
		{"EdDSA", "OKP"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			t.Parallel()
			const publishAhead = 10 * time.Minute // the default
			tg := launchTollgate(t, tgOptions{body: issuerBody(p, fmt.Sprintf(`internal_token: {enabled: true, issuer: %q, algorithm: %q}
keys: {dir: "keys"}
`, testIssuer, tc.alg))})
			status, h, body, err := httpGet(t.Context(), tg.jwksURL(), nil)
			if err != nil || status != http.StatusOK {
				t.Fatalf("GET /.well-known/jwks.json = %d, %v; want 200", status, err)
			}

			t.Run("JWKS has public members only: no d, p, q, dp, dq, qi or k", func(t *testing.T) {
				assertPublicOnly(t, body)
				var doc struct {
					Keys []struct{ KTY, Alg, Use, KID string } `json:"keys"`
				}
				if err := json.Unmarshal(body, &doc); err != nil || len(doc.Keys) == 0 {
					t.Fatalf("JWKS %s: %v", body, err)
				}
				for _, key := range doc.Keys {
					if key.KTY != tc.kty || key.Alg != tc.alg || key.Use != "sig" || key.KID == "" {
						t.Errorf("JWKS key = %+v; want kty %s, alg %s, use sig and a kid", key, tc.kty, tc.alg)
					}
				}
			})

			t.Run("JWKS has Cache-Control max-age ≤ publish_ahead and an ETag", func(t *testing.T) {
				cc := h.Get("Cache-Control")
				if age, ok := maxAge(cc); !ok || age <= 0 || age > publishAhead {
					t.Errorf("Cache-Control = %q; want 0 < max-age ≤ publish_ahead %v", cc, publishAhead)
				}
				if etag := h.Get("ETag"); len(etag) < 3 || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
					t.Errorf("ETag = %q; want a quoted strong entity tag", etag)
				}
			})

			t.Run("If-None-Match → 304 without a body; another ETag → 200", func(t *testing.T) {
				etag := h.Get("ETag")
				for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag} {
					status, h2, b, err := httpGet(t.Context(), tg.jwksURL(), map[string]string{"If-None-Match": inm})
					if err != nil || status != http.StatusNotModified || len(b) != 0 || h2.Get("ETag") != etag {
						t.Errorf("GET jwks.json If-None-Match %s = %d, %d bytes, ETag %q, %v; want 304, no body, same ETag", inm, status, len(b), h2.Get("ETag"), err)
					}
				}
				if status, _, b, err := httpGet(t.Context(), tg.jwksURL(), map[string]string{"If-None-Match": `"stale"`}); err != nil || status != http.StatusOK || string(b) != string(body) {
					t.Errorf("GET jwks.json If-None-Match \"stale\" = %d, %v; want 200 with the set", status, err)
				}
			})

			t.Run("openid-configuration names the issuer and a jwks_uri serving the same set", func(t *testing.T) {
				status, _, b, err := httpGet(t.Context(), "http://"+tg.httpAddr+"/.well-known/openid-configuration", nil)
				var disco struct {
					Issuer  string   `json:"issuer"`
					JWKSURI string   `json:"jwks_uri"`
					Algs    []string `json:"id_token_signing_alg_values_supported"`
				}
				if err != nil || status != http.StatusOK || json.Unmarshal(b, &disco) != nil {
					t.Fatalf("GET openid-configuration = %d %s, %v; want 200 JSON", status, b, err)
				}
				if disco.Issuer != testIssuer || disco.JWKSURI != tg.jwksURL() || !slices.Contains(disco.Algs, tc.alg) {
					t.Errorf("openid-configuration = %s; want issuer %q, jwks_uri %q, algorithms with %s", b, testIssuer, tg.jwksURL(), tc.alg)
				}
				if _, served := fetchJWKS(t, disco.JWKSURI); string(served) != string(body) {
					t.Errorf("GET jwks_uri = %s; want the set of /.well-known/jwks.json", served)
				}
			})

			t.Run("a minted token verifies with the published set", func(t *testing.T) {
				verifyWithServedJWKS(t, tg, mintFor(t, tg, "docs-"+tc.alg, sign(t, k, validClaims(p.issuer()), nil)), jwtToken("alice", time.Minute, nil))
			})
		})
	}
}

// TestIssuerForJWT mints internal tokens for bearer JWT identities.
func TestIssuerForJWT(t *testing.T) {
	t.Parallel()
	k := newES256Key(t, "forjwt-1")
	p := newIDP(t, 300, k)
	const ttl = 4 * time.Second
	on := launchTollgate(t, tgOptions{body: issuerBody(p, fmt.Sprintf(`internal_token: {enabled: true, issuer: %q, ttl: "4s", claims: ["roles"], for_jwt: true}
keys: {dir: "keys"}
`, testIssuer))})
	off := launchTollgate(t, tgOptions{body: issuerBody(p, fmt.Sprintf(`internal_token: {enabled: true, issuer: %q, for_jwt: false}
keys: {dir: "keys"}
`, testIssuer))})
	want := func(sub string) wantToken {
		return jwtToken(sub, ttl, map[string]any{"roles": []string{"reader", "writer"}})
	}
	jwtOf := func(t *testing.T, sub string) string {
		return sign(t, k, validClaims(p.issuer()).with(claims{"sub": sub}), nil)
	}

	t.Run("for_jwt: true → the internal token carries the JWT's sub and the configured claims", func(t *testing.T) {
		tok := mintFor(t, on, "forjwt-0", jwtOf(t, "ivy"))
		verifyWithServedJWKS(t, on, tok, want("ivy"))
	})

	t.Run("same JWT within half the TTL → the same internal token; after it → a fresh one", func(t *testing.T) {
		jwt := jwtOf(t, "jack")
		first := mintFor(t, on, "reuse-0", jwt)
		verifyWithServedJWKS(t, on, first, want("jack"))
		// The reuse window ends half a lifetime after the token's iat.
		half := tokenIAT(t, first).Add(ttl / 2)
		n := 0
		for i := 1; time.Now().Before(half.Add(-300 * time.Millisecond)); i++ {
			if got := mintFor(t, on, fmt.Sprintf("reuse-%d", i), jwt); got != first {
				t.Fatalf("Check %d, %v before half the TTL: a new internal token; want the first one reused", i, time.Until(half).Round(time.Millisecond))
			}
			n++
			time.Sleep(100 * time.Millisecond)
		}
		if n == 0 {
			t.Fatal("no repeated Check fell inside the reuse window; the test did not run")
		}
		time.Sleep(time.Until(half.Add(300 * time.Millisecond)))
		second := mintFor(t, on, "reuse-after", jwt)
		if second == first {
			t.Fatalf("Check after half the TTL returned the first token again; want a freshly minted one")
		}
		verifyWithServedJWKS(t, on, second, want("jack"))
		t.Logf("first token reused for %d repeated Checks", n)
	})

	t.Run("for_jwt: false → no internal token for a bearer JWT, and a client-sent one is removed", func(t *testing.T) {
		resp := off.check(t, checkRequest(t, ordersHost, "forjwt-off", jwtOf(t, "kim"), map[string]string{"x-internal-jwt": "forged"}))
		requireAllowed(t, "bearer JWT with for_jwt false", resp)
		ok := resp.GetOkResponse()
		if h, found := headerValue(ok.GetHeaders(), "x-internal-jwt"); found {
			t.Errorf("Check OkResponse sets x-internal-jwt = %q; want no internal token", h.GetHeader().GetValue())
		}
		if !slices.Contains(ok.GetHeadersToRemove(), "x-internal-jwt") {
			t.Errorf("headers_to_remove = %v; want x-internal-jwt (the client's forged value)", ok.GetHeadersToRemove())
		}
	})
}
