package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// verifyKey is one usable verification key: a public key from a key set,
// or an issuer's HMAC secret. It is immutable except for revoked.
type verifyKey struct {
	kid  string
	algs algSet // algorithms this key may verify; never empty
	pub  any    // *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey or []byte (HMAC)
	// thumb identifies the key material (RFC 7638 thumbprint) so that a
	// key surviving a refresh keeps its identity.
	thumb [32]byte
	// revoked is set once the key has left its issuer's key set. Cached
	// tokens verified with a revoked key are no longer served.
	revoked atomic.Bool
}

// keySet is an immutable snapshot of an issuer's keys. A refresh builds a
// new keySet and swaps it in atomically.
type keySet struct {
	byKid     map[string][]*verifyKey
	byAlg     [numAlgs][]*verifyKey // in document order, for tokens without kid
	all       []*verifyKey
	fetchedAt time.Time
}

// maxKidlessCandidates bounds the number of keys tried for a token without
// a kid, so a kid-less forgery costs at most this many verifications.
const maxKidlessCandidates = 4

func newKeySet(keys []*verifyKey, fetchedAt time.Time) *keySet {
	ks := &keySet{
		byKid:     make(map[string][]*verifyKey, len(keys)),
		all:       keys,
		fetchedAt: fetchedAt,
	}
	for _, k := range keys {
		ks.byKid[k.kid] = append(ks.byKid[k.kid], k)
		for a := alg(1); a < numAlgs; a++ {
			if k.algs.has(a) {
				ks.byAlg[a] = append(ks.byAlg[a], k)
			}
		}
	}
	return ks
}

// candidates returns the keys to try for a token: those with its kid, or,
// for a token without kid, the first few keys usable with its algorithm.
// Keys survive refreshes by identity, so comparing the candidates before
// and after a refresh tells whether retrying can help.
func (ks *keySet) candidates(h *header) []*verifyKey {
	if h.hasKid {
		return ks.byKid[h.kid]
	}
	c := ks.byAlg[h.alg]
	return c[:min(len(c), maxKidlessCandidates)]
}

// skippedKey explains why one entry of a key set was not loaded.
type skippedKey struct {
	index  int
	kid    string
	reason string
}

// parseKeySet decodes a JWKS document. Entries that are malformed,
// unsupported, meant for encryption, or too weak are skipped and reported;
// they never fail the whole set. A document that is not a JSON object with
// a "keys" array, or that yields no usable key, is an error.
func parseKeySet(body []byte) ([]*verifyKey, []skippedKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("key set is not valid JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, nil, errors.New(`key set has no "keys" array`)
	}
	var keys []*verifyKey
	var skipped []skippedKey
	for i, raw := range doc.Keys {
		k, kid, err := parseKey(raw)
		if err != nil {
			skipped = append(skipped, skippedKey{index: i, kid: kid, reason: err.Error()})
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("key set holds no usable signature verification key (%d entries)", len(doc.Keys))
	}
	return keys, skipped, nil
}

// parseKey turns one JWK into a verifyKey. The returned kid is set as soon
// as it is known, for logging. Errors never contain key material.
func parseKey(raw []byte) (*verifyKey, string, error) {
	// The kid is read on its own first, so even an entry jwx cannot parse
	// is identifiable in the log.
	var hint struct {
		Kid any `json:"kid"`
	}
	_ = json.Unmarshal(raw, &hint)
	kid, _ := hint.Kid.(string)
	if len(kid) > 256 {
		return nil, kid[:64] + "…", errors.New("kid longer than 256 bytes")
	}
	key, err := jwk.ParseKey(raw)
	if err != nil {
		// jwx's message is not logged: it may quote member values.
		return nil, kid, errors.New("not a parsable JWK")
	}
	if use, ok := key.KeyUsage(); ok && use != "sig" {
		return nil, kid, fmt.Errorf("use %q is not \"sig\"", use)
	}
	if ops, ok := key.KeyOps(); ok && !containsOp(ops, jwk.KeyOpVerify) {
		return nil, kid, errors.New(`key_ops lacks "verify"`)
	}
	switch kty := key.KeyType(); kty {
	case jwa.EC(), jwa.RSA(), jwa.OKP():
	default:
		return nil, kid, fmt.Errorf("key type %q is not accepted in a public key set", kty.String())
	}
	// A key set must only publish public keys; if it leaks a private
	// key, use its public half only.
	pubKey, err := key.PublicKey()
	if err != nil {
		return nil, kid, errors.New("cannot derive public key")
	}
	var pub any
	if err := jwk.Export(pubKey, &pub); err != nil {
		return nil, kid, errors.New("cannot export public key")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, kid, err
	}
	algs := algsForPublicKey(pub)
	if algs.empty() {
		return nil, kid, fmt.Errorf("unsupported public key %T", pub)
	}
	if ka, ok := key.Algorithm(); ok {
		a := parseAlg(ka.String())
		if !algs.has(a) {
			return nil, kid, fmt.Errorf("alg %q does not fit the key type", ka.String())
		}
		algs = 0
		algs.add(a)
	}
	tp, err := pubKey.Thumbprint(crypto.SHA256)
	if err != nil || len(tp) != 32 {
		return nil, kid, errors.New("cannot compute thumbprint")
	}
	k := &verifyKey{kid: kid, algs: algs, pub: pub}
	copy(k.thumb[:], tp)
	return k, kid, nil
}

func containsOp(ops jwk.KeyOperationList, op jwk.KeyOperation) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

// checkPublicKey rejects keys that parse but must not be used.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// ECDH validates that the point is on the curve.
		if _, err := k.ECDH(); err != nil {
			return errors.New("EC point is not valid for its curve")
		}
	case *rsa.PublicKey:
		if k.N == nil || k.N.Sign() <= 0 {
			return errors.New("RSA modulus missing")
		}
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("RSA modulus of %d bits outside [%d, %d]", bits, minRSABits, maxRSABits)
		}
		if k.E < 3 || k.E%2 == 0 {
			return errors.New("RSA exponent is not a valid public exponent")
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("Ed25519 key has the wrong length")
		}
	}
	return nil
}

// carryOver returns next with every key that is also in prev (same kid,
// same algorithms, same key material) replaced by prev's instance, so that
// tokens cached under it stay valid; how many keys are new; and the prev
// keys that are gone.
func carryOver(prev *keySet, next []*verifyKey) (merged []*verifyKey, added int, removed []*verifyKey) {
	if prev == nil {
		return next, len(next), nil
	}
	type ident struct {
		kid   string
		algs  algSet
		thumb [32]byte
	}
	old := make(map[ident]*verifyKey, len(prev.all))
	for _, k := range prev.all {
		if id := (ident{k.kid, k.algs, k.thumb}); old[id] == nil {
			old[id] = k
		}
	}
	merged = make([]*verifyKey, len(next))
	kept := make(map[*verifyKey]bool, len(next))
	for i, k := range next {
		if o, ok := old[ident{k.kid, k.algs, k.thumb}]; ok && !kept[o] {
			k = o
			kept[o] = true
		} else {
			added++
		}
		merged[i] = k
	}
	for _, k := range prev.all {
		if !kept[k] {
			removed = append(removed, k)
		}
	}
	return merged, added, removed
}
