package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// unknownKeyInterval is unknown_key_refresh_interval in ordersConfig.
const unknownKeyInterval = time.Second

func allowed(resp *authv3.CheckResponse) bool {
	return codes.Code(resp.GetStatus().GetCode()) == codes.OK && resp.GetOkResponse() != nil
}

func describe(resp *authv3.CheckResponse) string {
	if allowed(resp) {
		return "allowed"
	}
	return fmt.Sprintf("denied %d %s", resp.GetDeniedResponse().GetStatus().GetCode(), resp.GetStatus().GetMessage())
}

// TestKeyRotation rotates the IdP's keys under a running tollgate, which
// must pick the new keys up without a restart.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	k1 := newES256Key(t, "rot-1")
	p := newIDP(t, 300, k1) // max-age clamps to refresh_max: no scheduled refresh during the test
	tg := startTollgate(t, ordersConfig(p))
	var sent sentTokens
	send := func(t *testing.T, id, tok string) *authv3.CheckResponse {
		t.Helper()
		sent.add(tok)
		return tg.check(t, checkRequest(t, ordersHost, id, tok, nil))
	}

	k2 := newES256Key(t, "rot-2")
	tok2 := sign(t, k2, validClaims(p.issuer()), nil)

	// Subtests run in order: each step depends on the previous one.
	t.Run("token of a key the IdP has not published → 401 unknown key", func(t *testing.T) {
		resp := send(t, "rot-unknown", tok2)
		if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || resp.GetStatus().GetMessage() != "token_unknown_key" {
			t.Fatalf("Check(token of unpublished kid) = %s (code %d); want denied 401 token_unknown_key", describe(resp), resp.GetStatus().GetCode())
		}
	})

	t.Run("flood of unknown kids → at most one JWKS fetch per refresh interval", func(t *testing.T) {
		const n = 20
		before, start := p.hits.Load(), time.Now()
		for i := range n {
			tok := signWith(t, k2.alg, k2.priv, fmt.Sprintf("flood-%d", i), validClaims(p.issuer()), nil)
			if resp := send(t, fmt.Sprintf("rot-flood-%d", i), tok); resp.GetStatus().GetMessage() != "token_unknown_key" {
				t.Errorf("Check(token %d of an unpublished kid) = %s; want denied token_unknown_key", i, describe(resp))
			}
		}
		fetches := p.hits.Load() - before
		limit := 1 + int64(time.Since(start)/unknownKeyInterval)
		if fetches > limit {
			t.Errorf("JWKS fetches for %d unknown-kid tokens in %v = %d; want at most %d (unknown_key_refresh_interval 1s)",
				n, time.Since(start).Round(time.Millisecond), fetches, limit)
		}
	})

	t.Run("same token accepted once the IdP publishes the key, without restart", func(t *testing.T) {
		p.publish(k1, k2)
		published := time.Now()
		const deadline = 3 * time.Second // unknown_key_refresh_interval is 1s
		var last *authv3.CheckResponse
		for i := 0; time.Since(published) < deadline; i++ {
			last = send(t, fmt.Sprintf("rot-poll-%d", i), tok2)
			if allowed(last) {
				t.Logf("accepted %v after publication", time.Since(published).Round(time.Millisecond))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("Check(token of newly published kid) = %s for %v; want allowed", describe(last), deadline)
	})

	t.Run("tokens of a key published before first use → zero failed requests", func(t *testing.T) {
		k3 := newES256Key(t, "rot-3")
		p.publish(k1, k2, k3)
		// The last refresh for an unknown kid may be less than the
		// rate limit ago; past it, the first token of k3 must verify.
		time.Sleep(unknownKeyInterval + 200*time.Millisecond)
		const n = 20
		var wg sync.WaitGroup
		results := make([]string, n)
		// The first token triggers the refresh; the rest arrive
		// concurrently, during and after it.
		for i := range n {
			tok := sign(t, k3, validClaims(p.issuer()).with(claims{"sub": fmt.Sprintf("user-%d", i)}), nil)
			if i == 0 {
				results[0] = describe(send(t, "rot-new-0", tok))
				continue
			}
			sent.add(tok)
			req := checkRequest(t, ordersHost, fmt.Sprintf("rot-new-%d", i), tok, nil)
			wg.Go(func() { // no t.Fatal off the test goroutine
				ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
				defer cancel()
				resp, err := tg.client.Check(ctx, req)
				if err != nil {
					results[i] = "error " + err.Error()
					return
				}
				results[i] = describe(resp)
			})
		}
		wg.Wait()
		for i, got := range results {
			if got != "allowed" {
				t.Errorf("Check(fresh token %d of newly published key) = %s; want allowed", i, got)
			}
		}
		// Tokens of the key still published keep working.
		if resp := send(t, "rot-old", sign(t, k1, validClaims(p.issuer()), nil)); !allowed(resp) {
			t.Errorf("Check(token of the old, still published key) = %s; want allowed", describe(resp))
		}
	})

	t.Run("logs never contain a raw token", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), sent.all())
	})
}

// TestJWKSOutage stops the IdP's JWKS server after start-up: tollgate keeps
// verifying with the keys it has, even after failed refreshes.
func TestJWKSOutage(t *testing.T) {
	t.Parallel()
	k := newES256Key(t, "outage-1")
	p := newIDP(t, 1, k) // max-age=1: a refresh is due every refresh_min (1s)
	tg := startTollgate(t, ordersConfig(p))

	first := sign(t, k, validClaims(p.issuer()), nil)
	if resp := tg.check(t, checkRequest(t, ordersHost, "outage-before", first, nil)); !allowed(resp) {
		t.Fatalf("Check(valid token, JWKS up) = %s; want allowed", describe(resp))
	}

	p.srv.Close()
	// Let at least two scheduled refreshes fail.
	time.Sleep(2500 * time.Millisecond)

	tests := []struct {
		name string
		tok  string
	}{
		{"token never seen before, signed by a cached key → allowed", sign(t, k, validClaims(p.issuer()).with(claims{"sub": "carol"}), nil)},
		{"token seen before the outage → allowed", first},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if resp := tg.check(t, checkRequest(t, ordersHost, fmt.Sprintf("outage-after-%d", i), tc.tok, nil)); !allowed(resp) {
				t.Errorf("Check(token, JWKS server stopped) = %s; want allowed", describe(resp))
			}
		})
	}
	t.Run("readyz stays 200 during the outage", func(t *testing.T) {
		if status, body := tg.get(t, "/readyz"); status != http.StatusOK {
			t.Errorf("GET /readyz = %d %s; want 200", status, body)
		}
	})
}
