package keyring

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// noWatch hides the store's Watcher, leaving polling as the only way to
// see other replicas' changes.
type noWatch struct{ Store }

func TestRedisSharedByTwoReplicas(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	cfg := baseConfig()
	cfg.PublishAhead = time.Second
	cfg.RotationPeriod = time.Hour
	cfg.PollInterval = time.Hour // only pub/sub can propagate within the test
	s1 := newRedisStore(t, newRedisClient(t, addr))
	s2 := newRedisStore(t, newRedisClient(t, addr))
	k1 := startKeyring(t, cfg, s1)
	k2 := startKeyring(t, cfg, s2)
	pollCfg := cfg
	pollCfg.PollInterval = 300 * time.Millisecond
	k3 := startKeyring(t, pollCfg, noWatch{newRedisStore(t, newRedisClient(t, addr))})
	srv2 := httptest.NewServer(k2.Publisher())
	t.Cleanup(srv2.Close)
	ctx := t.Context()

	// Every private key ever seen, to scan Redis for later.
	var mu sync.Mutex
	seen := map[string][]byte{}
	remember := func() {
		keys, err := s1.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			if k.Signer != nil {
				der, err := marshalPrivate(k.Signer)
				if err != nil {
					t.Fatal(err)
				}
				seen[k.KID] = der
			}
		}
	}
	fetchSet := func() jwk.Set {
		resp, err := http.Get(srv2.URL + JWKSPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		set, err := jwk.ParseReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	sameActive := func(kid string) func() bool {
		return func() bool { return k1.ActiveKID() == kid && k2.ActiveKID() == kid && k3.ActiveKID() == kid }
	}

	t.Run("both sign with the same active key", func(t *testing.T) {
		if a := k1.ActiveKID(); a == "" || a != k2.ActiveKID() || a != k3.ActiveKID() {
			t.Fatalf("active keys %q, %q, %q; want one shared key", k1.ActiveKID(), k2.ActiveKID(), k3.ActiveKID())
		}
		remember()
	})
	t.Run("token minted by one verifies with the JWKS served by the other", func(t *testing.T) {
		tok, err := k1.Mint(ctx, MintRequest{Subject: "alice", Audience: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifyWith(fetchSet(), tok, cfg.Issuer, "orders"); err != nil {
			t.Errorf("verify with replica 2's JWKS = %v", err)
		}
	})
	var next KeyInfo
	t.Run("a next key created by one is published by the others within seconds", func(t *testing.T) {
		var err error
		if next, err = k1.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		remember()
		eventually(t, 3*time.Second, "replica 2 publishes the next key (pub/sub)", func() bool {
			_, ok := fetchSet().LookupKeyID(next.KID)
			return ok
		})
		eventually(t, 3*time.Second, "replica 3 publishes the next key (polling)", func() bool {
			_, ok := publicSet(t, k3).LookupKeyID(next.KID)
			return ok
		})
	})
	t.Run("the scheduled rotation, done by one, is used by all within seconds", func(t *testing.T) {
		// Rotate scheduled the next key at now+PublishAhead; whichever
		// replica's owner goroutine takes the lock first promotes it.
		eventually(t, cfg.PublishAhead+3*time.Second, "every replica signs with the new key", sameActive(next.KID))
		tok, err := k1.Mint(ctx, MintRequest{Audience: "svc"})
		if err != nil || kidOf(t, tok) != next.KID {
			t.Fatalf("Mint on replica 1 = kid %s, %v; want %s", kidOf(t, tok), err, next.KID)
		}
	})
	t.Run("a revocation by one is seen by all within seconds", func(t *testing.T) {
		var rec1 eventRecorder
		defer k1.Subscribe(rec1.add)()
		if err := k2.Revoke(ctx, next.KID); err != nil {
			t.Fatal(err)
		}
		remember()
		fresh := k2.ActiveKID()
		eventually(t, 3*time.Second, "replica 1 notified of the revocation", func() bool { return rec1.has(EventRevoked, next.KID) })
		eventually(t, 3*time.Second, "every replica signs with the fresh key", sameActive(fresh))
		if _, ok := fetchSet().LookupKeyID(next.KID); ok {
			t.Error("revoked key still published by replica 2")
		}
	})
	t.Run("no private key material in clear in Redis", func(t *testing.T) {
		c := newRedisClient(t, addr)
		var dump bytes.Buffer
		iter := c.Scan(ctx, 0, "*", 100).Iterator()
		n := 0
		for iter.Next(ctx) {
			key := iter.Val()
			n++
			dump.WriteString(key)
			switch typ := c.Type(ctx, key).Val(); typ {
			case "string":
				dump.WriteString(c.Get(ctx, key).Val())
			case "hash":
				for f, v := range c.HGetAll(ctx, key).Val() {
					dump.WriteString(f)
					dump.WriteString(v)
				}
			default:
				t.Errorf("unexpected redis key %s of type %s", key, typ)
			}
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		if n == 0 || len(seen) < 3 {
			t.Fatalf("scanned %d keys, %d private keys seen; want some", n, len(seen))
		}
		all := dump.Bytes()
		for _, needle := range []string{"PRIVATE KEY", `"d":`} {
			if bytes.Contains(all, []byte(needle)) {
				t.Errorf("redis holds %q", needle)
			}
		}
		for kid, der := range seen {
			priv, err := parsePrivate(der, ES256, kid)
			if err != nil {
				t.Fatal(err)
			}
			d, err := priv.(*ecdsa.PrivateKey).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			for name, secret := range map[string][]byte{
				"DER":              der,
				"base64 DER":       []byte(base64.StdEncoding.EncodeToString(der)),
				"base64url DER":    []byte(base64.RawURLEncoding.EncodeToString(der)),
				"scalar":           d,
				"hex scalar":       []byte(hex.EncodeToString(d)),
				"base64url scalar": []byte(base64.RawURLEncoding.EncodeToString(d)),
			} {
				if bytes.Contains(all, secret) {
					t.Errorf("redis holds the %s of key %s in clear", name, kid)
				}
			}
		}
	})
}

func TestRedisWrongKEK(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	k := startKeyring(t, baseConfig(), newRedisStore(t, newRedisClient(t, addr)))
	_ = k
	other, err := NewRedisStore(RedisStoreConfig{Client: newRedisClient(t, addr), KEK: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Load(t.Context()); err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("Load with another KEK = %v; want a decryption error", err)
	}
}

func TestRedisLock(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	c := newRedisClient(t, addr)
	s, err := NewRedisStore(RedisStoreConfig{Client: c, KEK: testKEK, LockTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	t.Run("release leaves another holder's lock alone", func(t *testing.T) {
		tok, err := s.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, s.lock, "someone-else", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		s.release(tok)
		if got := c.Get(ctx, s.lock).Val(); got != "someone-else" {
			t.Errorf("lock after a stale release = %q; want someone-else's", got)
		}
		c.Del(ctx, s.lock)
	})
	t.Run("lock expires when its holder dies", func(t *testing.T) {
		if _, err := s.acquire(ctx); err != nil { // never released
			t.Fatal(err)
		}
		start := time.Now()
		tok, err := s.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.release(tok)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("second acquire took %v; want about the lock TTL", d)
		}
	})
	t.Run("updates are serialised", func(t *testing.T) {
		var mu sync.Mutex
		inside, maxInside := 0, 0
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Update(ctx, func(cur []StoredKey, gen GenerateFunc) ([]Record, error) {
					mu.Lock()
					inside++
					maxInside = max(maxInside, inside)
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
					mu.Lock()
					inside--
					mu.Unlock()
					recs := make([]Record, len(cur))
					for i, k := range cur {
						recs[i] = k.Record
					}
					return recs, nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if maxInside != 1 {
			t.Errorf("%d updates ran at once; want 1", maxInside)
		}
	})
	t.Run("a holder whose lock expired cannot commit", func(t *testing.T) {
		before := c.HGetAll(ctx, s.keys).Val()
		_, err := s.Update(ctx, func(cur []StoredKey, gen GenerateFunc) ([]Record, error) {
			time.Sleep(1200 * time.Millisecond) // lock expires…
			c.Set(ctx, s.lock, "new-holder", time.Minute)
			sk, err := gen(KeySpec{Alg: ES256})
			if err != nil {
				return nil, err
			}
			return []Record{{KID: sk.KID, Alg: ES256, State: StateActive}}, nil
		})
		if !errors.Is(err, errLockLost) {
			t.Errorf("Update after losing the lock = %v; want errLockLost", err)
		}
		if after := c.HGetAll(ctx, s.keys).Val(); len(after) != len(before) {
			t.Errorf("store changed by a holder without the lock: %d keys → %d", len(before), len(after))
		}
		if got := c.Get(ctx, s.lock).Val(); got != "new-holder" {
			t.Errorf("lock = %q; want the new holder's", got)
		}
		c.Del(ctx, s.lock)
	})
}

func TestLoadKEK(t *testing.T) {
	dir := t.TempDir()
	raw := bytes.Repeat([]byte{0xAB}, 32)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("TEST_KEK", base64.StdEncoding.EncodeToString(raw))
	t.Setenv("TEST_KEK_SHORT", base64.StdEncoding.EncodeToString(raw[:16]))
	tests := []struct {
		name      string
		file, env string
		wantErr   bool
	}{
		{"raw 32-byte file → key", write("raw", raw), "", false},
		{"base64 file with newline → key", write("b64", []byte(base64.StdEncoding.EncodeToString(raw)+"\n")), "", false},
		{"base64url file → key", write("b64url", []byte(base64.RawURLEncoding.EncodeToString(raw))), "", false},
		{"env → key", "", "TEST_KEK", false},
		{"16-byte key → error", "", "TEST_KEK_SHORT", true},
		{"unset env → error", "", "TEST_KEK_UNSET", true},
		{"both → error", write("both", raw), "TEST_KEK", true},
		{"neither → error", "", "", true},
		{"garbage → error", write("junk", []byte("not a key")), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadKEK(tc.file, tc.env)
			if (err != nil) != tc.wantErr {
				t.Fatalf("LoadKEK = %v; want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !bytes.Equal(got, raw) {
				t.Errorf("LoadKEK = %x; want %x", got, raw)
			}
		})
	}
}
