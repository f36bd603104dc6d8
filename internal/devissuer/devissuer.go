// Package devissuer is the local token issuer of Tollgate's development
// mode: an ES256 key kept in a file, its public JWKS, and tokens signed with
// it. It exists so that `make run` shows real verification with no external
// identity provider; it is never enabled by a production config.
//
// Invariant: the private key is only ever read from or written to a file of
// mode 0600; the published set holds public members only.
package devissuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Issuer signs development tokens.
type Issuer struct {
	issuer string
	key    jwk.Key // private, with kid
	jwks   []byte  // public set, JSON
}

// LoadOrCreate reads the ES256 key at path, creating it (mode 0600, parent
// directories 0700) when it does not exist.
func LoadOrCreate(issuer, path string) (*Issuer, error) {
	raw, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = createKey(path)
	}
	if err != nil {
		return nil, err
	}
	return fromKey(issuer, raw)
}

// Load reads an existing key; it never creates one.
func Load(issuer, path string) (*Issuer, error) {
	raw, err := readKey(path)
	if err != nil {
		return nil, err
	}
	return fromKey(issuer, raw)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("dev key %s: mode %v is readable by group or others; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dev key %s: no PEM block", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev key %s: %w", path, err)
	}
	if k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("dev key %s: want a P-256 key", path)
	}
	return k, nil
}

func createKey(path string) (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev key: generate: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("dev key: encode: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	// O_EXCL: if another process created it meanwhile, use theirs.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, fmt.Errorf("dev key: write: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("dev key: write: %w", err)
	}
	return k, nil
}

func fromKey(issuer string, raw *ecdsa.PrivateKey) (*Issuer, error) {
	key, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	if err := jwk.AssignKeyID(key); err != nil { // RFC 7638 thumbprint
		return nil, fmt.Errorf("dev key: %w", err)
	}
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256())
	_ = key.Set(jwk.KeyUsageKey, jwk.ForSignature)
	set := jwk.NewSet()
	if err := set.AddKey(key); err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	pub, err := jwk.PublicSetOf(set)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	b, err := json.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	return &Issuer{issuer: issuer, key: key, jwks: b}, nil
}

// KeyID returns the thumbprint kid of the signing key.
func (i *Issuer) KeyID() string {
	kid, _ := i.key.KeyID()
	return kid
}

// Mint signs a token for sub and aud valid for ttl, with extra claims.
// Registered claims in extra are overwritten.
func (i *Issuer) Mint(sub string, aud []string, ttl time.Duration, extra map[string]any, now time.Time) (string, error) {
	claims := make(map[string]any, len(extra)+6)
	for k, v := range extra {
		claims[k] = v
	}
	claims["iss"] = i.issuer
	claims["sub"] = sub
	switch len(aud) {
	case 0:
		delete(claims, "aud")
	case 1:
		claims["aud"] = aud[0]
	default:
		claims["aud"] = aud
	}
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["exp"] = now.Add(ttl).Unix()
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("dev token: %w", err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "JWT")
	_ = hdr.Set(jws.KeyIDKey, i.KeyID())
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), i.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("dev token: sign: %w", err)
	}
	return string(tok), nil
}

// JWKSHandler serves the public key set. The dev key never rotates, but a
// short max-age keeps a deleted-and-recreated key file from confusing a
// running verifier for long.
func (i *Issuer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=60")
		_, _ = w.Write(i.jwks)
	})
}
