package keyring

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileStorePermissions(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.PublishAhead = time.Minute
	k := startKeyring(t, cfg, s)
	if _, err := k.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode = %v; want 0700", perm)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pems int
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
		info, _ := e.Info()
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %v; want 0600", e.Name(), perm)
		}
		if strings.HasSuffix(e.Name(), ".pem") {
			pems++
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			if !strings.HasPrefix(string(b), "-----BEGIN PRIVATE KEY-----") {
				t.Errorf("%s is not a PKCS #8 PEM", e.Name())
			}
		}
	}
	if pems != 2 {
		t.Errorf("key files = %d; want 2 (active, next)", pems)
	}
	meta, err := os.ReadFile(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(meta), "PRIVATE") {
		t.Error("metadata file holds key material")
	}
}

func TestFileStoreRefusesLooseKey(t *testing.T) {
	t.Parallel()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		t.Run(mode.String()+" → refused", func(t *testing.T) {
			t.Parallel()
			s := newFileStore(t)
			k := startKeyring(t, baseConfig(), s)
			path := filepath.Join(s.dir, k.ActiveKID()+".pem")
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			s2, _ := NewFileStore(s.dir)
			_, err := s2.Load(t.Context())
			if err == nil || !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("Load with a %v key = %v; want a refusal", mode, err)
			}
			k2, _ := New(baseConfig(), s2, WithLogger(quietLogger()))
			if err := k2.Start(t.Context()); err == nil {
				_ = k2.Stop(context.Background())
				t.Errorf("Start with a %v key = nil; want an error", mode)
			}
		})
	}
}

func TestFileStoreSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	cfg := baseConfig()
	cfg.PublishAhead = time.Minute
	s1, _ := NewFileStore(dir)
	k1, err := New(cfg, s1, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	next, err := k1.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	active := k1.ActiveKID()
	tok, err := k1.Mint(t.Context(), MintRequest{Subject: "a", Audience: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}

	s2, _ := NewFileStore(dir)
	k2 := startKeyring(t, cfg, s2)
	if k2.ActiveKID() != active {
		t.Errorf("active after restart = %s; want %s", k2.ActiveKID(), active)
	}
	set := publicSet(t, k2)
	if _, ok := set.LookupKeyID(next.KID); !ok {
		t.Error("next key lost in restart")
	}
	if _, err := verifyWith(set, tok, cfg.Issuer, "svc"); err != nil {
		t.Errorf("token minted before restart does not verify after it: %v", err)
	}
}

func TestFileStoreSeesOtherProcess(t *testing.T) {
	t.Parallel()
	// A second store on the same directory stands for the CLI.
	cfg := baseConfig()
	cfg.PublishAhead = time.Minute
	cfg.PollInterval = 100 * time.Millisecond
	s := newFileStore(t)
	k := startKeyring(t, cfg, s)
	cli, _ := NewFileStore(s.dir)
	kc, err := New(cfg, cli)
	if err != nil {
		t.Fatal(err)
	}
	old := k.ActiveKID()
	if err := kc.Revoke(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "server sees the CLI's revocation", func() bool {
		a := k.ActiveKID()
		return a != "" && a != old
	})
}
