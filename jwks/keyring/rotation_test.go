package keyring

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDownstreamVerifierThroughRotations mints internal tokens under
// continuous load while the keys rotate three times (time-compressed:
// ttl 2s, rotation every 5s, publish_ahead 2s ≥ max-age 1s, grace 4s) and
// verifies every token with a naive downstream verifier that caches the
// JWKS exactly as long as Cache-Control allows, both at once and again
// just before the token expires. Zero failures are allowed. Then an
// emergency revocation: the revoked key signs nothing more and its tokens
// stop verifying once the verifier refreshes.
//
// Variants: one keyring on a file store; two replicas sharing a Redis
// store, minting on one and publishing from the other.
func TestDownstreamVerifierThroughRotations(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.TTL = 2 * time.Second
	cfg.RotationPeriod = 5 * time.Second
	cfg.PublishAhead = 2 * time.Second
	cfg.MaxAge = time.Second
	cfg.GracePeriod = 4 * time.Second
	cfg.PollInterval = time.Second

	type setup struct{ minter, publisher *Keyring }
	variants := []struct {
		name  string
		setup func(t *testing.T) setup
	}{
		{"file store", func(t *testing.T) setup {
			k := startKeyring(t, cfg, newFileStore(t))
			return setup{k, k}
		}},
		{"redis store, two replicas", func(t *testing.T) setup {
			addr := startRedis(t)
			k1 := startKeyring(t, cfg, newRedisStore(t, newRedisClient(t, addr)))
			k2 := startKeyring(t, cfg, newRedisStore(t, newRedisClient(t, addr)))
			return setup{k1, k2}
		}},
	}
	for _, vt := range variants {
		t.Run(vt.name, func(t *testing.T) {
			t.Parallel()
			s := vt.setup(t)
			k := s.minter
			srv := httptest.NewServer(s.publisher.Publisher())
			t.Cleanup(srv.Close)
			v := &naiveVerifier{url: srv.URL + JWKSPath, issuer: cfg.Issuer, client: srv.Client()}
			var rec eventRecorder
			defer k.Subscribe(rec.add)()

			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			var (
				minted, verified, lateVerified, failures atomic.Int64
				errMu                                    sync.Mutex
				errs                                     []string
				kids                                     sync.Map
			)
			fail := func(format string, args ...any) {
				failures.Add(1)
				errMu.Lock()
				if len(errs) < 10 {
					errs = append(errs, fmt.Sprintf(format, args...))
				}
				errMu.Unlock()
			}
			type pending struct {
				tok string
				exp time.Time
			}
			late := make(chan pending, 8192)
			stop := make(chan struct{})
			var workers, checker sync.WaitGroup
			for g := range 3 {
				workers.Add(1)
				go func() {
					defer workers.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-ctx.Done():
							return
						case <-time.After(5 * time.Millisecond):
						}
						now := time.Now()
						tok, err := k.Mint(ctx, MintRequest{
							CacheKey: fmt.Sprintf("user-%d-%d", g, i%16), Subject: fmt.Sprintf("user-%d", i%16),
							Audience: "orders", Claims: map[string]any{"roles": []string{"reader"}, "tenant": "acme"},
						})
						if err != nil {
							fail("Mint: %v", err)
							continue
						}
						minted.Add(1)
						kids.Store(kidOf(t, tok), true)
						if err := v.Verify(tok, "orders"); err != nil {
							fail("verify at once (kid %s): %v", kidOf(t, tok), err)
							continue
						}
						verified.Add(1)
						if i%8 == 0 {
							select {
							case late <- pending{tok, time.Unix(now.Unix(), 0).Add(cfg.TTL)}:
							default:
							}
						}
					}
				}()
			}
			checker.Add(1)
			go func() {
				defer checker.Done()
				for p := range late {
					at := p.exp.Add(-400 * time.Millisecond)
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
					if time.Until(p.exp) < 150*time.Millisecond {
						continue // fell behind: too close to expiry to mean anything
					}
					if err := v.Verify(p.tok, "orders"); err != nil {
						fail("verify just before expiry (kid %s): %v", kidOf(t, p.tok), err)
						continue
					}
					lateVerified.Add(1)
				}
			}()

			// Count rotations by the signing keys the tokens show:
			// activation events also count the first key (and, racing
			// with the workers, a key no token was signed with yet).
			eventually(t, 40*time.Second, "three rotations", func() bool {
				n := 0
				kids.Range(func(any, any) bool { n++; return true })
				return n >= 4
			})
			close(stop)
			workers.Wait()
			close(late)
			checker.Wait()
			nkids := 0
			kids.Range(func(any, any) bool { nkids++; return true })
			t.Logf("minted %d, verified %d at once and %d before expiry, %d signing keys, %d JWKS fetches",
				minted.Load(), verified.Load(), lateVerified.Load(), nkids, v.fetches)
			if n := failures.Load(); n > 0 {
				t.Fatalf("%d failures through rotation; first: %s", n, strings.Join(errs, "; "))
			}
			if nkids < 4 || minted.Load() < 300 || lateVerified.Load() < 20 {
				t.Fatalf("load too small to mean anything: %d keys, %d tokens, %d late checks", nkids, minted.Load(), lateVerified.Load())
			}

			t.Run("emergency revocation", func(t *testing.T) {
				// Start just after a second boundary so the probe token
				// lives the full TTL.
				time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
				probe := MintRequest{CacheKey: "probe", Subject: "probe", Audience: "orders"}
				tokR, err := k.Mint(ctx, probe)
				if err != nil {
					t.Fatal(err)
				}
				revoked := kidOf(t, tokR)
				if err := v.Verify(tokR, "orders"); err != nil {
					t.Fatalf("probe before revocation: %v", err)
				}
				if err := s.publisher.Revoke(ctx, revoked); err != nil {
					t.Fatal(err)
				}
				eventually(t, 3*time.Second, "minting replica notified", func() bool {
					return rec.has(EventRevoked, revoked) && k.ActiveKID() != revoked
				})
				for i := range 50 {
					tok, err := k.Mint(ctx, MintRequest{CacheKey: fmt.Sprintf("after-%d", i%5), Audience: "orders"})
					if err != nil {
						t.Fatal(err)
					}
					if kidOf(t, tok) == revoked {
						t.Fatal("token signed by the revoked key after revocation")
					}
				}
				if tok, _ := k.Mint(ctx, probe); tok == tokR || kidOf(t, tok) == revoked {
					t.Fatal("the cached token of the revoked key was reused")
				}
				time.Sleep(cfg.MaxAge + 100*time.Millisecond) // the verifier's cache goes stale
				err = v.Verify(tokR, "orders")
				if err == nil || !strings.Contains(err.Error(), "unknown kid") {
					t.Errorf("probe after the verifier refreshed = %v; want unknown kid", err)
				}
				fresh, err := k.Mint(ctx, MintRequest{CacheKey: "fresh", Audience: "orders"})
				if err != nil {
					t.Fatal(err)
				}
				if err := v.Verify(fresh, "orders"); err != nil {
					t.Errorf("token of the fresh key after refresh = %v", err)
				}
			})
		})
	}
}
