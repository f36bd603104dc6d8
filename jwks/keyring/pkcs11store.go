//go:build cgo

package keyring

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// pkcs11Label is the CKA_LABEL of every key pair the store generates.
const pkcs11Label = "tollgate-keyring"

// PKCS11Config configures a PKCS11Store.
type PKCS11Config struct {
	// Module is the path of the PKCS #11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so. Required.
	Module string
	// TokenLabel selects the token. Required.
	TokenLabel string
	// PinFile holds the user PIN (surrounding whitespace ignored).
	// Required unless PIN is set.
	PinFile string
	// PIN is the user PIN itself, for callers that hold it already.
	PIN string
	// StateFile is the side file that keeps the keys' metadata (state
	// and times) and the CKA_ID of each key pair; StateFile+".lock" is
	// its lock. It holds no secret. Required.
	StateFile string
}

// PKCS11Store keeps the private keys inside a PKCS #11 token (an HSM, or
// SoftHSM2): each key pair is generated in the token with CKA_TOKEN,
// CKA_PRIVATE and CKA_SENSITIVE true and CKA_EXTRACTABLE false, labelled
// "tollgate-keyring" with a random 16-byte CKA_ID, and signs through the
// module; the private key never leaves the token. A key pair found without
// CKA_SENSITIVE/CKA_ALWAYS_SENSITIVE true and
// CKA_EXTRACTABLE/CKA_NEVER_EXTRACTABLE false/true is refused.
//
// Metadata lives in a side JSON file (see FileStore for the format; each
// record adds "pkcs11_id", the hex CKA_ID), written atomically and
// serialised by flock, so processes on one host sharing the token (the
// server and the CLI) coordinate. Replicas on different hosts sharing a
// network HSM would each need the same side file; use one rotating
// replica, or the redis store, for that.
//
// Supports ES256 and RS256 (crypto11 has no Ed25519).
type PKCS11Store struct {
	p11  *crypto11.Context
	meta metaFile

	mu    sync.Mutex
	cache map[string]crypto11.Signer // kid → key pair handle
}

var _ Store = (*PKCS11Store)(nil)

// NewPKCS11Store loads the module, finds the token and logs in.
func NewPKCS11Store(cfg PKCS11Config) (*PKCS11Store, error) {
	var errs []error
	if cfg.Module == "" {
		errs = append(errs, errors.New("module is required"))
	}
	if cfg.TokenLabel == "" {
		errs = append(errs, errors.New("token_label is required"))
	}
	if cfg.StateFile == "" {
		errs = append(errs, errors.New("state_file is required"))
	}
	pin := cfg.PIN
	if pin == "" {
		if cfg.PinFile == "" {
			errs = append(errs, errors.New("pin_file is required"))
		} else if b, err := os.ReadFile(cfg.PinFile); err != nil {
			errs = append(errs, fmt.Errorf("pin_file: %w", err))
		} else {
			pin = strings.TrimSpace(string(b))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("keyring: pkcs11 store: %w", err)
	}
	p11, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: pin})
	if err != nil {
		return nil, fmt.Errorf("keyring: pkcs11 store: %w", err)
	}
	return &PKCS11Store{
		p11:   p11,
		meta:  metaFile{path: cfg.StateFile, lockPath: cfg.StateFile + ".lock"},
		cache: map[string]crypto11.Signer{},
	}, nil
}

// Close logs out and unloads the module (when no other store uses it).
func (s *PKCS11Store) Close() error { return s.p11.Close() }

// Load implements Store.
func (s *PKCS11Store) Load(ctx context.Context) ([]StoredKey, error) {
	keys, _, err := s.load()
	return keys, err
}

func (s *PKCS11Store) load() ([]StoredKey, map[string]string, error) {
	recs, err := s.meta.read()
	if err != nil {
		return nil, nil, fmt.Errorf("pkcs11 store: %w", err)
	}
	out := make([]StoredKey, 0, len(recs))
	ids := map[string]string{}
	for _, r := range recs {
		sk := StoredKey{Record: r.Record}
		if r.State != StateRevoked {
			signer, err := s.find(r)
			if err != nil {
				return nil, nil, fmt.Errorf("pkcs11 store: key %s: %w", r.KID, err)
			}
			sk.Signer = signer
			ids[r.KID] = r.PKCS11ID
		}
		out = append(out, sk)
	}
	s.mu.Lock()
	maps.DeleteFunc(s.cache, func(kid string, _ crypto11.Signer) bool { _, ok := ids[kid]; return !ok })
	s.mu.Unlock()
	return out, ids, nil
}

func (s *PKCS11Store) find(r metaRecord) (crypto11.Signer, error) {
	s.mu.Lock()
	c, ok := s.cache[r.KID]
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	id, err := hex.DecodeString(r.PKCS11ID)
	if err != nil || len(id) == 0 {
		return nil, errors.New("missing or malformed pkcs11_id")
	}
	signer, err := s.p11.FindKeyPair(id, nil)
	if err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, fmt.Errorf("no key pair with CKA_ID %s in the token", r.PKCS11ID)
	}
	if err := s.checkProtected(signer); err != nil {
		return nil, err
	}
	if err := checkSigner(signer, r.Alg, r.KID); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[r.KID] = signer
	s.mu.Unlock()
	return signer, nil
}

// checkProtected refuses a private key that is, or ever was, extractable
// or not sensitive.
func (s *PKCS11Store) checkProtected(signer crypto11.Signer) error {
	want := map[crypto11.AttributeType]bool{
		crypto11.CkaSensitive:        true,
		crypto11.CkaAlwaysSensitive:  true,
		crypto11.CkaExtractable:      false,
		crypto11.CkaNeverExtractable: true,
	}
	types := []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaAlwaysSensitive, crypto11.CkaExtractable, crypto11.CkaNeverExtractable}
	attrs, err := s.p11.GetAttributes(signer, types)
	if err != nil {
		return fmt.Errorf("reading key attributes: %w", err)
	}
	for _, t := range types {
		a := attrs[t]
		if a == nil || len(a.Value) != 1 || (a.Value[0] != 0) != want[t] {
			return fmt.Errorf("private key is not protected by the token (attribute 0x%x is not %v)", t, want[t])
		}
	}
	return nil
}

func (s *PKCS11Store) generate(spec KeySpec) (crypto11.Signer, []byte, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(pkcs11Label))
	if err != nil {
		return nil, nil, err
	}
	priv, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(pkcs11Label))
	if err != nil {
		return nil, nil, err
	}
	for t, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken:       true,
		crypto11.CkaPrivate:     true,
		crypto11.CkaSensitive:   true,
		crypto11.CkaExtractable: false,
		crypto11.CkaSign:        true,
	} {
		if err := priv.Set(t, v); err != nil {
			return nil, nil, err
		}
	}
	var signer crypto11.Signer
	switch spec.Alg {
	case ES256:
		signer, err = s.p11.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	case RS256:
		bits := spec.rsaBits()
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, nil, fmt.Errorf("RSA key size %d outside [%d, %d]", bits, MinRSABits, MaxRSABits)
		}
		signer, err = s.p11.GenerateRSAKeyPairWithAttributes(pub, priv, bits)
	default:
		return nil, nil, fmt.Errorf("the pkcs11 store cannot generate %s keys (ES256 and RS256 only)", spec.Alg)
	}
	if err != nil {
		return nil, nil, err
	}
	return signer, id, nil
}

// Update implements Store.
func (s *PKCS11Store) Update(ctx context.Context, fn UpdateFunc) ([]StoredKey, error) {
	unlock, err := lockFile(ctx, s.meta.lockPath)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 store: lock: %w", err)
	}
	defer unlock()
	cur, ids, err := s.load()
	if err != nil {
		return nil, err
	}
	signers := map[string]crypto.Signer{}
	handles := map[string]crypto11.Signer{}
	for _, c := range cur {
		if c.Signer != nil {
			signers[c.KID] = c.Signer
			handles[c.KID] = c.Signer.(crypto11.Signer)
		}
	}
	var generated []crypto11.Signer
	committedOK := false
	defer func() {
		if !committedOK {
			for _, g := range generated {
				_ = g.Delete()
			}
		}
	}()
	gen := func(spec KeySpec) (StoredKey, error) {
		signer, id, err := s.generate(spec)
		if err != nil {
			return StoredKey{}, fmt.Errorf("pkcs11: %w", err)
		}
		generated = append(generated, signer)
		kid, err := Thumbprint(signer.Public())
		if err != nil {
			return StoredKey{}, err
		}
		signers[kid], handles[kid], ids[kid] = signer, signer, hex.EncodeToString(id)
		return StoredKey{Record: Record{KID: kid, Alg: spec.Alg}, Signer: signer}, nil
	}
	recs, err := fn(cur, gen)
	if err != nil {
		return nil, err
	}
	out, err := committed(recs, signers)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 store: %w", err)
	}
	mrecs := make([]metaRecord, len(out))
	keep := map[string]bool{}
	for i, k := range out {
		mrecs[i] = metaRecord{Record: k.Record}
		if k.Signer != nil {
			mrecs[i].PKCS11ID = ids[k.KID]
			keep[k.KID] = true
		}
	}
	if err := s.meta.write(mrecs); err != nil {
		return nil, fmt.Errorf("pkcs11 store: %w", err)
	}
	committedOK = true
	// Destroy the key pairs that no longer need to exist: expired and
	// revoked keys, and generated keys the plan did not keep.
	for kid, h := range handles {
		if !keep[kid] {
			_ = h.Delete()
			s.mu.Lock()
			delete(s.cache, kid)
			s.mu.Unlock()
		}
	}
	return out, nil
}
