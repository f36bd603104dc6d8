//go:build cgo

package keyring

import (
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// Tokens initialised once per test binary: SoftHSM2 reads its
// configuration when the module is first loaded, and a process loads it
// once, so every test shares one configuration and uses its own token.
var softHSMTokens = []string{"tollgate", "tollgate-rsa", "tollgate-eddsa", "tollgate-bench"}

var softHSM struct {
	once    sync.Once
	dir     string
	pinFile string
	err     error
}

// setupSoftHSM creates a temporary SoftHSM2 configuration and token
// directory, initialises the test tokens and points SOFTHSM2_CONF at it.
// Missing SoftHSM2 fails the test.
func setupSoftHSM(t testing.TB) (pinFile string) {
	t.Helper()
	softHSM.once.Do(func() {
		util, err := exec.LookPath("softhsm2-util")
		if err != nil {
			softHSM.err = fmt.Errorf("softhsm2-util not found (apt-get install softhsm2): %w", err)
			return
		}
		if _, err := os.Stat(softHSMModule); err != nil {
			softHSM.err = fmt.Errorf("SoftHSM2 module missing (apt-get install softhsm2): %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "tollgate-softhsm-")
		if err != nil {
			softHSM.err = err
			return
		}
		softHSM.dir = dir
		tokens := filepath.Join(dir, "tokens")
		conf := filepath.Join(dir, "softhsm2.conf")
		if err := os.Mkdir(tokens, 0o700); err != nil {
			softHSM.err = err
			return
		}
		if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
			softHSM.err = err
			return
		}
		os.Setenv("SOFTHSM2_CONF", conf)
		for _, label := range softHSMTokens {
			cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678")
			cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
			if out, err := cmd.CombinedOutput(); err != nil {
				softHSM.err = fmt.Errorf("softhsm2-util --init-token %s: %v: %s", label, err, out)
				return
			}
		}
		softHSM.pinFile = filepath.Join(dir, "pin")
		softHSM.err = os.WriteFile(softHSM.pinFile, []byte("1234\n"), 0o600)
	})
	if softHSM.err != nil {
		t.Fatalf("SoftHSM2 setup: %v", softHSM.err)
	}
	return softHSM.pinFile
}

func TestMain(m *testing.M) {
	code := m.Run()
	if softHSM.dir != "" {
		os.RemoveAll(softHSM.dir)
	}
	os.Exit(code)
}

func newPKCS11Store(t testing.TB, label, stateFile string) *PKCS11Store {
	t.Helper()
	pin := setupSoftHSM(t)
	s, err := NewPKCS11Store(PKCS11Config{Module: softHSMModule, TokenLabel: label, PinFile: pin, StateFile: stateFile})
	if err != nil {
		t.Fatalf("NewPKCS11Store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPKCS11(t *testing.T) {
	for _, tc := range []struct {
		alg   Algorithm
		label string
	}{{ES256, "tollgate"}, {RS256, "tollgate-rsa"}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state.json")
			s := newPKCS11Store(t, tc.label, state)
			cfg := baseConfig()
			cfg.Algorithm = tc.alg
			cfg.PublishAhead = time.Second
			clock := newFakeClock()
			k := startKeyring(t, cfg, s, WithClock(clock.Now))
			ctx := t.Context()

			first := k.ActiveKID()
			tok, err := k.Mint(ctx, MintRequest{Subject: "alice", Audience: "orders", Claims: map[string]any{"tenant": "t"}})
			if err != nil {
				t.Fatalf("Mint = %v", err)
			}
			if _, err := verifyWith(publicSet(t, k), tok, cfg.Issuer, "orders", jwtClock(clock)); err != nil {
				t.Fatalf("verify with the published JWKS = %v", err)
			}

			t.Run("private key generated in the token, not extractable", func(t *testing.T) {
				signer, ok := signerOf(t, s, first).(crypto11.Signer)
				if !ok {
					t.Fatalf("signer is %T; want a crypto11.Signer", signerOf(t, s, first))
				}
				for attr, want := range map[crypto11.AttributeType]byte{
					crypto11.CkaExtractable: 0, crypto11.CkaSensitive: 1, crypto11.CkaNeverExtractable: 1, crypto11.CkaToken: 1,
				} {
					a, err := s.p11.GetAttribute(signer, attr)
					if err != nil {
						t.Fatalf("GetAttribute(0x%x) = %v", attr, err)
					}
					if len(a.Value) != 1 || a.Value[0] != want {
						t.Errorf("attribute 0x%x = %v; want %d", attr, a.Value, want)
					}
				}
				if a, err := s.p11.GetAttribute(signer, crypto11.CkaValue); err == nil && a != nil && len(a.Value) > 0 {
					t.Error("CKA_VALUE of the private key is readable")
				}
			})
			t.Run("rotate → new key signs, old one still verifies", func(t *testing.T) {
				next, err := k.Rotate(ctx)
				if err != nil {
					t.Fatal(err)
				}
				clock.Advance(cfg.PublishAhead)
				ki, err := k.Rotate(ctx)
				if err != nil || ki.KID != next.KID || ki.State != StateActive {
					t.Fatalf("Rotate = %+v, %v; want %s active", ki, err, next.KID)
				}
				tok2, err := k.Mint(ctx, MintRequest{Subject: "alice", Audience: "orders"})
				if err != nil {
					t.Fatal(err)
				}
				set := publicSet(t, k)
				if kidOf(t, tok2) != next.KID {
					t.Errorf("new token kid = %s; want %s", kidOf(t, tok2), next.KID)
				}
				for _, tk := range []string{tok, tok2} {
					if _, err := verifyWith(set, tk, cfg.Issuer, "orders", jwtClock(clock)); err != nil {
						t.Errorf("verify = %v", err)
					}
				}
			})
			t.Run("restart loads the same keys from the token", func(t *testing.T) {
				s2 := newPKCS11Store(t, tc.label, state)
				k2 := startKeyring(t, cfg, s2, WithClock(clock.Now))
				if k2.ActiveKID() != k.ActiveKID() {
					t.Errorf("active after restart = %s; want %s", k2.ActiveKID(), k.ActiveKID())
				}
			})
			t.Run("revoke destroys the key pair in the token", func(t *testing.T) {
				old := k.ActiveKID()
				recs, err := s.meta.read()
				if err != nil {
					t.Fatal(err)
				}
				var id string
				for _, r := range recs {
					if r.KID == old {
						id = r.PKCS11ID
					}
				}
				if err := k.Revoke(ctx, old); err != nil {
					t.Fatal(err)
				}
				if id == "" {
					t.Fatal("no pkcs11_id recorded")
				}
				// crypto11 reports a missing pair as nil or as an error.
				if found, _ := s.p11.FindKeyPair(mustHex(t, id), nil); found != nil {
					t.Error("key pair of the revoked key still in the token")
				}
				if found, _ := s.p11.FindPrivateKey(mustHex(t, id), nil); found != nil {
					t.Error("private key of the revoked key still in the token")
				}
			})
		})
	}
}

func TestPKCS11RefusesEdDSA(t *testing.T) {
	s := newPKCS11Store(t, "tollgate-eddsa", filepath.Join(t.TempDir(), "state.json"))
	cfg := baseConfig()
	cfg.Algorithm = EdDSA
	k, err := New(cfg, s, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	err = k.Start(t.Context())
	if err == nil {
		_ = k.Stop(context.Background())
	}
	if err == nil || !strings.Contains(err.Error(), "ES256 and RS256 only") {
		t.Errorf("Start with EdDSA on PKCS #11 = %v; want a refusal", err)
	}
}

func TestPKCS11Config(t *testing.T) {
	_, err := NewPKCS11Store(PKCS11Config{})
	for _, w := range []string{"module is required", "token_label is required", "state_file is required", "pin_file is required"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("NewPKCS11Store(empty) = %v; want %q", err, w)
		}
	}
}

// signerOf returns the private key the store holds for kid.
func signerOf(t testing.TB, s Store, kid string) crypto.Signer {
	t.Helper()
	keys, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.KID == kid {
			return k.Signer
		}
	}
	t.Fatalf("store has no key %s", kid)
	return nil
}

func jwtClock(c *fakeClock) jwt.ParseOption { return jwt.WithClock(jwt.ClockFunc(c.Now)) }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
