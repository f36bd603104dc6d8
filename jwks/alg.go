package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
)

// alg is a JWS signature algorithm this package can verify. The zero value
// is "not supported"; "none" is never representable.
type alg uint8

const (
	algUnsupported alg = iota
	algHS256
	algHS384
	algHS512
	algRS256
	algRS384
	algRS512
	algPS256
	algPS384
	algPS512
	algES256
	algES384
	algES512
	algEdDSA
	numAlgs
)

var algNames = [numAlgs]string{
	algHS256: "HS256",
	algHS384: "HS384",
	algHS512: "HS512",
	algRS256: "RS256",
	algRS384: "RS384",
	algRS512: "RS512",
	algPS256: "PS256",
	algPS384: "PS384",
	algPS512: "PS512",
	algES256: "ES256",
	algES384: "ES384",
	algES512: "ES512",
	algEdDSA: "EdDSA",
}

// parseAlg maps a JOSE "alg" value to an alg. Matching is exact
// (case-sensitive), as RFC 7515 requires.
func parseAlg(s string) alg {
	switch s {
	case "HS256":
		return algHS256
	case "HS384":
		return algHS384
	case "HS512":
		return algHS512
	case "RS256":
		return algRS256
	case "RS384":
		return algRS384
	case "RS512":
		return algRS512
	case "PS256":
		return algPS256
	case "PS384":
		return algPS384
	case "PS512":
		return algPS512
	case "ES256":
		return algES256
	case "ES384":
		return algES384
	case "ES512":
		return algES512
	case "EdDSA":
		return algEdDSA
	}
	return algUnsupported
}

func (a alg) String() string {
	if a == algUnsupported || a >= numAlgs {
		return "unsupported"
	}
	return algNames[a]
}

// isHMAC reports whether a is a symmetric algorithm. Symmetric algorithms
// are only ever verified with the issuer's configured secret, never with a
// key from a JWKS document.
func (a alg) isHMAC() bool { return a == algHS256 || a == algHS384 || a == algHS512 }

// minHMACSecret is the minimum secret length for a, per RFC 7518 §3.2
// ("a key of the same size as the hash output or larger MUST be used").
func (a alg) minHMACSecret() int {
	switch a {
	case algHS256:
		return 32
	case algHS384:
		return 48
	case algHS512:
		return 64
	}
	return 0
}

// algSet is a bit set of algs.
type algSet uint32

func (s algSet) has(a alg) bool { return a != algUnsupported && s&(1<<a) != 0 }

func (s *algSet) add(a alg) { *s |= 1 << a }

func (s algSet) empty() bool { return s == 0 }

// hasAsymmetric reports whether s contains an algorithm verified with a
// public key, i.e. whether an issuer needs a remote key set.
func (s algSet) hasAsymmetric() bool {
	return s&^(1<<algHS256|1<<algHS384|1<<algHS512) != 0
}

const rsaAlgs = algSet(1<<algRS256 | 1<<algRS384 | 1<<algRS512 | 1<<algPS256 | 1<<algPS384 | 1<<algPS512)

// RSA moduli outside [minRSABits, maxRSABits] are skipped when a key set
// loads: short keys are breakable, huge ones make every verification a CPU
// sink.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// algsForPublicKey returns the algorithms a public key may verify, derived
// from its type and curve alone. An EC key is bound to exactly one
// algorithm (P-256 ↔ ES256 and so on); an RSA key to the RS*/PS* family; an
// Ed25519 key to EdDSA. HMAC algorithms are never returned.
func algsForPublicKey(pub any) algSet {
	var s algSet
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			s.add(algES256)
		case elliptic.P384():
			s.add(algES384)
		case elliptic.P521():
			s.add(algES512)
		}
	case *rsa.PublicKey:
		s = rsaAlgs
	case ed25519.PublicKey:
		s.add(algEdDSA)
	}
	return s
}
