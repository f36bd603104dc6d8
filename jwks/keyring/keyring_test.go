package keyring

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none → valid
	}{
		{"defaults → valid", func(*Config) {}, nil},
		{"missing issuer → error", func(c *Config) { c.Issuer = "" }, []string{"issuer: required"}},
		{"grace shorter than 2×ttl → error", func(c *Config) { c.TTL = time.Minute; c.GracePeriod = 119 * time.Second }, []string{"grace_period: must be at least 2 × ttl"}},
		{"grace exactly 2×ttl → valid", func(c *Config) { c.TTL = time.Minute; c.GracePeriod = 2 * time.Minute }, nil},
		{"negative publish_ahead → error", func(c *Config) { c.PublishAhead = -time.Second }, []string{"publish_ahead: must be greater than 0"}},
		{"max_age above publish_ahead → error", func(c *Config) { c.PublishAhead = time.Minute; c.MaxAge = 2 * time.Minute }, []string{"max_age: must be at most publish_ahead"}},
		{"fractional ttl → error", func(c *Config) { c.TTL = 1500 * time.Millisecond }, []string{"ttl: must be a whole number of seconds"}},
		{"RSA below 2048 → error", func(c *Config) { c.Algorithm = RS256; c.RSABits = 1024 }, []string{"rsa_bits: must be 2048 to 8192"}},
		{"unknown algorithm → error", func(c *Config) { c.Algorithm = "HS256" }, []string{`algorithm: must be ES256, RS256 or EdDSA (got "HS256")`}},
		{"registered claim in allowlist → error", func(c *Config) { c.Claims = []string{"roles", "aud"} }, []string{`claims[1]: "aud" is a registered claim`}},
		{"rotation shorter than publish_ahead → error", func(c *Config) { c.RotationPeriod = time.Minute }, []string{"rotation_period: must be at least publish_ahead"}},
		{"relative base_url → error", func(c *Config) { c.BaseURL = "/keys" }, []string{"base_url: must be an absolute URL"}},
		{"every problem reported at once", func(c *Config) { c.Issuer = ""; c.TTL = -1; c.Algorithm = "none" }, []string{"issuer:", "ttl:", "algorithm:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := baseConfig()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := baseConfig().withDefaults()
	if c.TTL != 60*time.Second || c.Algorithm != ES256 || c.RotationPeriod != 720*time.Hour ||
		c.GracePeriod != 2*time.Hour || c.PublishAhead != 10*time.Minute || c.MaxAge != 5*time.Minute ||
		c.BaseURL != c.Issuer {
		t.Errorf("withDefaults() = %+v", c)
	}
	c = Config{Issuer: "https://x", PublishAhead: 3 * time.Second}.withDefaults()
	if c.MaxAge != time.Second {
		t.Errorf("MaxAge with publish_ahead 3s = %v; want 1s", c.MaxAge)
	}
}

func TestThumbprint(t *testing.T) {
	t.Parallel()
	// RFC 7638 §3.1 example.
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	rfc := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got, _ := Thumbprint(rfc); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("Thumbprint(RFC 7638 example) = %s; want NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", got)
	}
	for _, alg := range []Algorithm{ES256, RS256, EdDSA} {
		t.Run(string(alg)+" matches jwx", func(t *testing.T) {
			t.Parallel()
			for range 5 {
				s, err := generateSoftware(KeySpec{Alg: alg})
				if err != nil {
					t.Fatal(err)
				}
				got, err := Thumbprint(s.Public())
				if err != nil {
					t.Fatal(err)
				}
				k, err := jwk.Import(s.Public())
				if err != nil {
					t.Fatal(err)
				}
				tp, err := k.Thumbprint(crypto.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if want := base64.RawURLEncoding.EncodeToString(tp); got != want {
					t.Fatalf("Thumbprint = %s; want %s (jwx)", got, want)
				}
			}
		})
	}
}

func TestDERToRaw(t *testing.T) {
	t.Parallel()
	priv, _ := ecdsa.GenerateKey(ecdsaCurve(), rand.Reader)
	h := sha256.Sum256([]byte("x"))
	for range 200 { // exercises short R/S and leading zero bytes
		der, err := ecdsa.SignASN1(rand.Reader, priv, h[:])
		if err != nil {
			t.Fatal(err)
		}
		raw, err := derToRaw(der, 32)
		if err != nil {
			t.Fatalf("derToRaw = %v", err)
		}
		r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
		if !ecdsa.Verify(&priv.PublicKey, h[:], r, s) {
			t.Fatal("raw signature does not verify")
		}
	}
	for _, bad := range [][]byte{nil, {0x30}, {0x30, 0x02, 0x02, 0x00}, {0x31, 0x00}, {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00}} {
		if _, err := derToRaw(bad, 32); err == nil {
			t.Errorf("derToRaw(%x) = nil error; want malformed", bad)
		}
	}
}

// syncAt runs a scheduled reconcile as the owner goroutine would.
func syncAt(t *testing.T, k *Keyring) {
	t.Helper()
	if _, err := k.update(t.Context(), op{kind: opSync}); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func states(t *testing.T, k *Keyring) map[State][]KeyInfo {
	t.Helper()
	keys, err := k.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m := map[State][]KeyInfo{}
	for _, ki := range keys {
		m[ki.State] = append(m[ki.State], ki)
	}
	return m
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	cfg := baseConfig()
	cfg.RotationPeriod = time.Hour
	cfg.PublishAhead = 10 * time.Minute
	cfg.GracePeriod = 30 * time.Minute
	store := newFileStore(t)
	k := startKeyring(t, cfg, store, WithClock(clock.Now))
	t0 := clock.Now()

	s := states(t, k)
	if len(s[StateActive]) != 1 || len(s) != 1 {
		t.Fatalf("after Start on an empty store: %v; want exactly one active key", s)
	}
	first := s[StateActive][0]
	if want := t0.Add(50 * time.Minute); !k.view.Load().nextEvent.Equal(want) {
		t.Errorf("next event = %v; want %v (rotation − publish_ahead)", k.view.Load().nextEvent, want)
	}

	clock.Advance(49 * time.Minute)
	syncAt(t, k)
	if s := states(t, k); len(s[StateNext]) != 0 {
		t.Fatalf("next key created at 49m; want it at 50m")
	}
	clock.Advance(time.Minute)
	syncAt(t, k)
	s = states(t, k)
	if len(s[StateNext]) != 1 || !s[StateNext][0].ActivateAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("at 50m: %v; want a next key scheduled at 1h", s)
	}
	next := s[StateNext][0]
	if _, ok := publicSet(t, k).LookupKeyID(next.KID); !ok {
		t.Error("next key not published")
	}
	if k.ActiveKID() != first.KID {
		t.Error("next key signs before its time")
	}

	clock.Advance(10 * time.Minute)
	syncAt(t, k)
	s = states(t, k)
	if k.ActiveKID() != next.KID || len(s[StateRetiring]) != 1 || s[StateRetiring][0].KID != first.KID {
		t.Fatalf("at 1h: %v; want next active and first retiring", s)
	}
	if _, ok := publicSet(t, k).LookupKeyID(first.KID); !ok {
		t.Error("retiring key not published")
	}

	clock.Advance(cfg.GracePeriod)
	syncAt(t, k)
	if _, ok := publicSet(t, k).LookupKeyID(first.KID); ok {
		t.Error("retiring key still published after grace period")
	}
	if _, err := os.Stat(filepath.Join(store.dir, first.KID+".pem")); !os.IsNotExist(err) {
		t.Errorf("expired key file still exists (stat = %v)", err)
	}
}

func TestRotate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	cfg := baseConfig()
	cfg.PublishAhead = time.Minute
	k := startKeyring(t, cfg, newFileStore(t), WithClock(clock.Now))
	ctx := t.Context()
	active := k.ActiveKID()

	ki, err := k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ki.State != StateNext || !ki.ActivateAt.Equal(clock.Now().Add(time.Minute)) || k.ActiveKID() != active {
		t.Fatalf("Rotate with no next key = %+v; want a next key scheduled in publish_ahead", ki)
	}
	clock.Advance(30 * time.Second)
	again, err := k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.KID != ki.KID || again.State != StateNext || !again.ActivateAt.Equal(ki.CreatedAt.Add(time.Minute)) {
		t.Fatalf("Rotate with a young next key = %+v; want it kept, activating at created+publish_ahead", again)
	}
	clock.Advance(30 * time.Second)
	done, err := k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if done.KID != ki.KID || done.State != StateActive || k.ActiveKID() != ki.KID {
		t.Fatalf("Rotate with a next key published publish_ahead ago = %+v; want it active", done)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	cfg := baseConfig()
	cfg.PublishAhead = time.Minute
	cfg.GracePeriod = 5 * time.Minute
	k := startKeyring(t, cfg, newFileStore(t), WithClock(clock.Now))
	ctx := t.Context()
	var rec eventRecorder
	k.Subscribe(rec.add)

	if err := k.Revoke(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Revoke(unknown) = %v; want ErrUnknownKey", err)
	}

	next, err := k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	active := k.ActiveKID()
	t.Run("next key → withdrawn, active unchanged", func(t *testing.T) {
		if err := k.Revoke(ctx, next.KID); err != nil {
			t.Fatal(err)
		}
		if k.ActiveKID() != active {
			t.Error("revoking the next key changed the active key")
		}
		if _, ok := publicSet(t, k).LookupKeyID(next.KID); ok {
			t.Error("revoked next key still published")
		}
		if !rec.has(EventRevoked, next.KID) {
			t.Error("no EventRevoked for the next key")
		}
		if err := k.Revoke(ctx, next.KID); err != nil {
			t.Errorf("Revoke(revoked) = %v; want nil", err)
		}
	})
	t.Run("active key → withdrawn, fresh key active at once", func(t *testing.T) {
		if err := k.Revoke(ctx, active); err != nil {
			t.Fatal(err)
		}
		now := k.ActiveKID()
		if now == "" || now == active || now == next.KID {
			t.Fatalf("active after revoking it = %q; want a fresh key", now)
		}
		set := publicSet(t, k)
		if _, ok := set.LookupKeyID(active); ok {
			t.Error("revoked active key still published")
		}
		if _, ok := set.LookupKeyID(now); !ok {
			t.Error("fresh key not published")
		}
		if !rec.has(EventRevoked, active) || !rec.has(EventActivated, now) {
			t.Errorf("events = %v; want revoked %s and activated %s", rec.events, active, now)
		}
		s := states(t, k)
		if len(s[StateRevoked]) != 2 {
			t.Errorf("tombstones = %d; want 2", len(s[StateRevoked]))
		}
	})
	t.Run("tombstones expire after the grace period", func(t *testing.T) {
		clock.Advance(cfg.GracePeriod)
		syncAt(t, k)
		if s := states(t, k); len(s[StateRevoked]) != 0 {
			t.Errorf("tombstones after grace = %d; want 0", len(s[StateRevoked]))
		}
	})
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	k, err := New(baseConfig(), newFileStore(t), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Stop(t.Context()); err != nil {
		t.Errorf("Stop before Start = %v; want nil", err)
	}
	k2, _ := New(baseConfig(), newFileStore(t), WithLogger(quietLogger()))
	if err := k2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := k2.Start(t.Context()); err == nil {
		t.Error("second Start = nil; want an error")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := k2.Stop(ctx); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if err := k2.Stop(ctx); err != nil {
		t.Errorf("second Stop = %v; want nil", err)
	}
	if _, err := k2.Mint(t.Context(), MintRequest{Audience: "svc"}); err != nil {
		t.Errorf("Mint after Stop = %v; want the last keys to keep signing", err)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New(zero config, nil store) = nil error")
	}
}

func ecdsaCurve() elliptic.Curve { return elliptic.P256() }
