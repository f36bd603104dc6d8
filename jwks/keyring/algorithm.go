package keyring

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
)

// Algorithm is the JWS "alg" a key signs with.
type Algorithm string

// Supported signing algorithms.
const (
	// ES256 is ECDSA on P-256 with SHA-256 (the default): small keys,
	// small signatures, fast signing.
	ES256 Algorithm = "ES256"
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256, keys of at least 2048 bits.
	RS256 Algorithm = "RS256"
	// EdDSA is Ed25519. Not available with the PKCS#11 store.
	EdDSA Algorithm = "EdDSA"
)

// RSA key sizes accepted for RS256. The upper bound matches what the
// jwks verifier accepts, so every key this package makes is verifiable by
// Tollgate itself.
const (
	MinRSABits     = 2048
	MaxRSABits     = 8192
	DefaultRSABits = 2048
)

func (a Algorithm) valid() bool { return a == ES256 || a == RS256 || a == EdDSA }

// KeySpec says what key to generate.
type KeySpec struct {
	Alg     Algorithm
	RSABits int // RS256 only; DefaultRSABits when 0
}

func (s KeySpec) rsaBits() int {
	if s.RSABits == 0 {
		return DefaultRSABits
	}
	return s.RSABits
}

// generateSoftware creates a key pair in process memory (file and redis
// stores).
func generateSoftware(spec KeySpec) (crypto.Signer, error) {
	switch spec.Alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		bits := spec.rsaBits()
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("RSA key size %d outside [%d, %d]", bits, MinRSABits, MaxRSABits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("unsupported algorithm %q", spec.Alg)
}

// checkPublic verifies that pub is a key alg may sign with: ES256 needs
// P-256, RS256 an RSA modulus of MinRSABits to MaxRSABits, EdDSA Ed25519.
func checkPublic(alg Algorithm, pub crypto.PublicKey) error {
	switch alg {
	case ES256:
		if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
			return nil
		}
		return errors.New("ES256 needs an EC P-256 key")
	case RS256:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return errors.New("RS256 needs an RSA key")
		}
		if n := k.N.BitLen(); n < MinRSABits || n > MaxRSABits {
			return fmt.Errorf("RSA key of %d bits outside [%d, %d]", n, MinRSABits, MaxRSABits)
		}
		return nil
	case EdDSA:
		if _, ok := pub.(ed25519.PublicKey); ok {
			return nil
		}
		return errors.New("EdDSA needs an Ed25519 key")
	}
	return fmt.Errorf("unsupported algorithm %q", alg)
}

var b64 = base64.RawURLEncoding

// jwkMembers returns the required public members of pub's JWK in the
// lexicographic order RFC 7638 §3.2 demands, as name/value pairs.
func jwkMembers(pub crypto.PublicKey) ([][2]string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("unsupported EC curve")
		}
		pt, err := k.Bytes() // 0x04 || X || Y, each 32 bytes
		if err != nil {
			return nil, err
		}
		return [][2]string{{"crv", "P-256"}, {"kty", "EC"}, {"x", b64.EncodeToString(pt[1:33])}, {"y", b64.EncodeToString(pt[33:65])}}, nil
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		return [][2]string{{"e", b64.EncodeToString(e)}, {"kty", "RSA"}, {"n", b64.EncodeToString(k.N.Bytes())}}, nil
	case ed25519.PublicKey:
		return [][2]string{{"crv", "Ed25519"}, {"kty", "OKP"}, {"x", b64.EncodeToString(k)}}, nil
	}
	return nil, fmt.Errorf("unsupported public key type %T", pub)
}

// Thumbprint returns the RFC 7638 JWK thumbprint of pub: the base64url
// (unpadded) SHA-256 of its required members serialised in lexicographic
// order without whitespace. It is the kid of every key of a Keyring.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	m, err := jwkMembers(pub)
	if err != nil {
		return "", err
	}
	buf := []byte{'{'}
	for i, kv := range m {
		if i > 0 {
			buf = append(buf, ',')
		}
		// Member values are base64url or fixed names: no escaping needed.
		buf = append(buf, '"')
		buf = append(buf, kv[0]...)
		buf = append(buf, `":"`...)
		buf = append(buf, kv[1]...)
		buf = append(buf, '"')
	}
	buf = append(buf, '}')
	sum := sha256.Sum256(buf)
	return b64.EncodeToString(sum[:]), nil
}

// publicJWK returns the published JWK of pub: kty, use, alg, kid and the
// public members only. Private members cannot appear: they are never
// read.
func publicJWK(alg Algorithm, kid string, pub crypto.PublicKey) ([]byte, error) {
	m, err := jwkMembers(pub)
	if err != nil {
		return nil, err
	}
	var kty string
	buf := []byte(`{`)
	for _, kv := range m {
		if kv[0] == "kty" {
			kty = kv[1]
		}
	}
	buf = append(buf, `"kty":"`...)
	buf = append(buf, kty...)
	buf = append(buf, `","use":"sig","alg":"`...)
	buf = append(buf, alg...)
	buf = append(buf, `","kid":"`...)
	buf = append(buf, kid...)
	buf = append(buf, '"')
	for _, kv := range m {
		if kv[0] == "kty" {
			continue
		}
		buf = append(buf, `,"`...)
		buf = append(buf, kv[0]...)
		buf = append(buf, `":"`...)
		buf = append(buf, kv[1]...)
		buf = append(buf, '"')
	}
	buf = append(buf, '}')
	return buf, nil
}

// validKID reports whether s looks like a thumbprint kid: 43 base64url
// characters. Stores check it before using a kid in a file name or key.
func validKID(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// marshalPrivate encodes a software key as PKCS #8 DER.
func marshalPrivate(s crypto.Signer) ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(s)
}

// parsePrivate decodes PKCS #8 DER and checks the key fits alg and kid.
func parsePrivate(der []byte, alg Algorithm, kid string) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	if err := checkSigner(s, alg, kid); err != nil {
		return nil, err
	}
	return s, nil
}

// checkSigner verifies that s signs for alg and that its public key's
// thumbprint is kid, so a swapped or corrupted key is refused.
func checkSigner(s crypto.Signer, alg Algorithm, kid string) error {
	if err := checkPublic(alg, s.Public()); err != nil {
		return err
	}
	tp, err := Thumbprint(s.Public())
	if err != nil {
		return err
	}
	if tp != kid {
		return errors.New("key does not match its kid")
	}
	return nil
}

// sign returns the JWS signature of input with s for alg. ES256 signatures
// are the raw 64-byte R||S form RFC 7518 §3.4 requires, whatever form the
// signer returns (crypto.Signer implementations, software or PKCS #11,
// return ASN.1 DER).
func sign(s crypto.Signer, alg Algorithm, input []byte) ([]byte, error) {
	switch alg {
	case ES256:
		h := sha256.Sum256(input)
		der, err := s.Sign(rand.Reader, h[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return derToRaw(der, 32)
	case RS256:
		h := sha256.Sum256(input)
		return s.Sign(rand.Reader, h[:], crypto.SHA256)
	case EdDSA:
		return s.Sign(rand.Reader, input, crypto.Hash(0))
	}
	return nil, fmt.Errorf("unsupported algorithm %q", alg)
}

var errBadDER = errors.New("malformed ECDSA signature")

// derToRaw converts an ASN.1 DER ECDSA-Sig-Value (SEQUENCE of two
// INTEGERs) into the fixed-size R||S form, each half size bytes.
func derToRaw(der []byte, size int) ([]byte, error) {
	if len(der) < 2 || der[0] != 0x30 {
		return nil, errBadDER
	}
	n, rest, ok := derLen(der[1:])
	if !ok || n != len(rest) {
		return nil, errBadDER
	}
	out := make([]byte, 2*size)
	for i := 0; i < 2; i++ {
		if len(rest) < 2 || rest[0] != 0x02 {
			return nil, errBadDER
		}
		l, body, ok := derLen(rest[1:])
		if !ok || l == 0 || l > len(body) {
			return nil, errBadDER
		}
		v := body[:l]
		rest = body[l:]
		if v[0]&0x80 != 0 {
			return nil, errBadDER // negative
		}
		for len(v) > 0 && v[0] == 0 {
			v = v[1:]
		}
		if len(v) > size {
			return nil, errBadDER
		}
		copy(out[i*size+size-len(v):(i+1)*size], v)
	}
	if len(rest) != 0 {
		return nil, errBadDER
	}
	return out, nil
}

// derLen parses a DER length (short form or one/two length bytes).
func derLen(b []byte) (int, []byte, bool) {
	if len(b) == 0 {
		return 0, nil, false
	}
	switch c := b[0]; {
	case c < 0x80:
		return int(c), b[1:], true
	case c == 0x81 && len(b) >= 2:
		return int(b[1]), b[2:], true
	case c == 0x82 && len(b) >= 3:
		return int(b[1])<<8 | int(b[2]), b[3:], true
	}
	return 0, nil, false
}
