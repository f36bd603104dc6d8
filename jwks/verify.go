package jwks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// Token is a verified JWT. A Token is shared by every caller that presents
// the same token while it is cached: treat it, including Claims, as
// read-only.
type Token struct {
	Issuer    string
	Subject   string
	Audience  []string // "aud" as a string or an array, normalised to a slice
	Expiry    time.Time
	NotBefore time.Time // zero if absent
	IssuedAt  time.Time // zero if absent
	KeyID     string
	Algorithm string
	// Claims is the full payload, decoded with json.Decoder.UseNumber:
	// numbers are json.Number.
	Claims map[string]any
	// Hash is the SHA-256 of the compact token: a stable identity for
	// per-token caches downstream (e.g. internal-token reuse) that never
	// holds the token itself.
	Hash [32]byte
}

// HashKey returns Hash as a string without copying. The Token is
// immutable, so the string stays valid and unchanged while t is reachable.
func (t *Token) HashKey() string { return unsafe.String(&t.Hash[0], len(t.Hash)) }

// HasAudience reports whether any of t's audiences equals any accepted
// value.
func (t *Token) HasAudience(accepted []string) bool {
	for _, a := range t.Audience {
		for _, b := range accepted {
			if a == b {
				return true
			}
		}
	}
	return false
}

// b64 decodes JOSE segments: base64url without padding, canonical only.
var b64 = base64.RawURLEncoding.Strict()

// b64url marks the bytes allowed in a compact JWS: the base64url alphabet
// and the segment separator. Everything else, including the CR and LF that
// encoding/base64 would silently skip, makes a token malformed.
var b64url = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") {
		t[c] = true
	}
	return t
}()

// Verify checks a compact JWS bearer token: structure, header, issuer,
// algorithm, signature (with the issuer's keys only), exp, nbf and iat. It
// does not check the audience; use Token.HasAudience. Every error is a
// *reason.Error; when ctx ends while waiting for a key set refresh, the
// error also wraps ctx.Err().
//
// A token that verified once is served from the cache, without
// re-verification, until it expires or its signing key leaves the key set.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > v.maxToken {
		return nil, reason.New(reason.TokenTooLarge)
	}
	if raw == "" {
		return nil, reason.New(reason.TokenMalformed)
	}
	// sha256.Sum256 only reads its argument, so a read-only view of the
	// string's bytes avoids copying the token on every request.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	now := v.now()
	if e := v.cache.get(&sum); e != nil {
		v.metrics.hit()
		if now.UnixNano() < e.expiresAt {
			return e.tok, nil
		}
		v.cache.remove(e)
		return nil, reason.New(reason.TokenExpired)
	}
	v.metrics.miss()
	tok, key, leeway, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, err
	}
	tok.Hash = sum
	v.cache.add(&sum, tok, key, unixNanoSat(tok.Expiry.Add(leeway)), approxEntrySize(len(raw)))
	return tok, nil
}

// header is what Verify takes from the JOSE header.
type header struct {
	alg     alg
	algName string
	kid     string
	hasKid  bool
}

// verify runs every check on a token that is not cached. It returns the
// token, the key that verified it, and the issuer's leeway.
func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Token, *verifyKey, time.Duration, error) {
	// One pass: validate the alphabet and find the separators.
	dot1, dot2, dots := -1, -1, 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !b64url[c] {
			return nil, nil, 0, reason.New(reason.TokenMalformed)
		}
		if c == '.' {
			switch dots {
			case 0:
				dot1 = i
			case 1:
				dot2 = i
			}
			dots++
		}
	}
	switch {
	case dots == 4:
		return nil, nil, 0, reason.Wrap(reason.TokenUnsupported, errors.New("JWE compact serialization"))
	case dots != 2:
		return nil, nil, 0, reason.Wrap(reason.TokenMalformed, errors.New("not three segments"))
	case dot1 == 0:
		return nil, nil, 0, reason.Wrap(reason.TokenMalformed, errors.New("empty header"))
	}

	// One allocation holds the signing input and the decoded segments.
	hdrLen := b64.DecodedLen(dot1)
	payLen := b64.DecodedLen(dot2 - dot1 - 1)
	sigLen := b64.DecodedLen(len(raw) - dot2 - 1)
	buf := make([]byte, len(raw)+hdrLen+payLen+sigLen)
	copy(buf, raw)
	signingInput := buf[:dot2]
	dec := buf[len(raw):]
	hdrJSON, err := decodeSegment(dec[:hdrLen], buf[:dot1])
	if err != nil {
		return nil, nil, 0, reason.Wrap(reason.TokenMalformed, errors.New("header is not base64url"))
	}
	// The header goes first so that "alg":"none" is reported as such even
	// though such tokens come with an empty signature.
	h, err := parseHeader(hdrJSON)
	if err != nil {
		return nil, nil, 0, err
	}
	if dot2 == dot1+1 || dot2 == len(raw)-1 {
		return nil, nil, 0, reason.Wrap(reason.TokenMalformed, errors.New("empty segment"))
	}
	payJSON, err1 := decodeSegment(dec[hdrLen:hdrLen+payLen], buf[dot1+1:dot2])
	sig, err2 := decodeSegment(dec[hdrLen+payLen:], buf[dot2+1:len(raw)])
	if err1 != nil || err2 != nil {
		return nil, nil, 0, reason.Wrap(reason.TokenMalformed, errors.New("payload or signature is not base64url"))
	}
	claims, err := decodeClaims(payJSON)
	if err != nil {
		return nil, nil, 0, err
	}

	// The issuer is chosen from the unverified payload; its keys alone
	// can then vouch for the token.
	iss, err := stringClaim(claims, "iss")
	if err != nil {
		return nil, nil, 0, err
	}
	is := v.byIssuer[iss]
	if is == nil {
		return nil, nil, 0, reason.New(reason.TokenIssuer)
	}
	if !is.algs.has(h.alg) {
		return nil, nil, 0, reason.New(reason.TokenAlgorithm)
	}
	key, err := v.verifySignature(ctx, is, &h, signingInput, sig)
	if err != nil {
		return nil, nil, 0, err
	}
	tok, err := newToken(claims, iss, &h, now, is.cfg.Leeway)
	if err != nil {
		return nil, nil, 0, err
	}
	return tok, key, is.cfg.Leeway, nil
}

func decodeSegment(dst, src []byte) ([]byte, error) {
	n, err := b64.Decode(dst, src)
	return dst[:n], err
}

// parseHeader applies the header rules. It uses jwx's header reader, which
// matches member names exactly (case-sensitively).
func parseHeader(b []byte) (header, error) {
	h := jwsbb.HeaderParse(b)
	algName, err := jwsbb.HeaderGetString(h, "alg")
	if err != nil {
		// Also the result for invalid JSON and a non-object header.
		return header{}, reason.Wrap(reason.TokenMalformed, errors.New(`header: no valid "alg"`))
	}
	a := parseAlg(algName)
	if a == algUnsupported {
		return header{}, reason.New(reason.TokenAlgorithm)
	}
	// Keys or key locations in the header are never trusted.
	for _, name := range [...]string{"jku", "x5u", "jwk", "x5c"} {
		if jwsbb.HeaderHas(h, name) {
			return header{}, reason.Wrap(reason.TokenHeaderKey, errors.New("header: "+name))
		}
	}
	// No critical extension is understood; b64 (RFC 7797) changes the
	// signing input and is refused even when not marked critical.
	for _, name := range [...]string{"crit", "b64"} {
		if jwsbb.HeaderHas(h, name) {
			return header{}, reason.Wrap(reason.TokenUnsupported, errors.New("header: "+name))
		}
	}
	switch cty, err := jwsbb.HeaderGetString(h, "cty"); {
	case err == nil:
		if strings.EqualFold(cty, "JWT") || strings.EqualFold(cty, "application/jwt") {
			return header{}, reason.Wrap(reason.TokenUnsupported, errors.New("nested JWT"))
		}
	case !errors.Is(err, jwsbb.ErrHeaderNotFound()):
		return header{}, reason.Wrap(reason.TokenMalformed, errors.New(`header: "cty" is not a string`))
	}
	out := header{alg: a, algName: algName}
	switch kid, err := jwsbb.HeaderGetString(h, "kid"); {
	case err == nil:
		out.kid, out.hasKid = kid, true
	case !errors.Is(err, jwsbb.ErrHeaderNotFound()):
		return header{}, reason.Wrap(reason.TokenMalformed, errors.New(`header: "kid" is not a string`))
	}
	return out, nil
}

// decodeClaims decodes the payload, which must be exactly one JSON object.
func decodeClaims(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, reason.Wrap(reason.TokenMalformed, errors.New("payload is not a JSON object"))
	}
	if m == nil {
		return nil, reason.Wrap(reason.TokenMalformed, errors.New("payload is null"))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, reason.Wrap(reason.TokenMalformed, errors.New("payload has trailing data"))
	}
	return m, nil
}

// verifySignature finds the issuer's key for the token and checks the
// signature with it. HMAC algorithms use the issuer's secret and nothing
// else; public-key algorithms use the issuer's key set and nothing else.
func (v *Verifier) verifySignature(ctx context.Context, is *issuer, h *header, signingInput, sig []byte) (*verifyKey, error) {
	if h.alg.isHMAC() {
		if is.hmac == nil || !is.hmac.algs.has(h.alg) {
			return nil, reason.New(reason.TokenAlgorithm)
		}
		if jwsbb.Verify(is.hmac.pub, h.algName, signingInput, sig) != nil {
			return nil, reason.New(reason.TokenSignature)
		}
		return is.hmac, nil
	}
	refreshed := false
	// refreshOnce refreshes the key set at most once per Verify; it
	// reports whether the lookup should be retried.
	refreshOnce := func() (bool, error) {
		if refreshed {
			return false, nil
		}
		refreshed = true
		return v.refreshOnDemand(ctx, is)
	}
	for {
		ks := is.keys.Load()
		if ks == nil {
			retry, err := refreshOnce()
			if retry {
				continue
			}
			return nil, reason.Wrap(reason.JWKSUnavailable, err)
		}
		cands := ks.candidates(h)
		tried := 0
		for _, k := range cands {
			if !k.algs.has(h.alg) {
				continue
			}
			tried++
			if jwsbb.Verify(k.pub, h.algName, signingInput, sig) == nil {
				return k, nil
			}
		}
		if tried == 0 && len(cands) > 0 {
			// The kid is known, but not for this algorithm.
			return nil, reason.New(reason.TokenAlgorithm)
		}
		// Unknown kid, or no key that verifies: the issuer may have
		// rotated. Refresh (rate-limited), and retry if that changed the
		// keys this token can use.
		retry, err := refreshOnce()
		if next := is.keys.Load(); retry && next != nil && !slices.Equal(next.candidates(h), cands) {
			continue
		}
		switch {
		case tried > 0:
			return nil, reason.New(reason.TokenSignature)
		case err != nil:
			return nil, reason.Wrap(reason.TokenUnknownKey, err)
		}
		return nil, reason.New(reason.TokenUnknownKey)
	}
}

// newToken checks the time claims and builds the Token.
func newToken(claims map[string]any, iss string, h *header, now time.Time, leeway time.Duration) (*Token, error) {
	tok := &Token{Issuer: iss, KeyID: h.kid, Algorithm: h.algName, Claims: claims}
	rawExp, ok := claims["exp"]
	if !ok {
		return nil, reason.New(reason.TokenMissingExpiry)
	}
	var err error
	if tok.Expiry, err = numericDate(rawExp); err != nil {
		return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"exp" is not a NumericDate`))
	}
	if !tok.Expiry.After(now.Add(-leeway)) {
		return nil, reason.New(reason.TokenExpired)
	}
	if raw, ok := claims["nbf"]; ok {
		if tok.NotBefore, err = numericDate(raw); err != nil {
			return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"nbf" is not a NumericDate`))
		}
		if tok.NotBefore.After(now.Add(leeway)) {
			return nil, reason.New(reason.TokenNotYetValid)
		}
	}
	if raw, ok := claims["iat"]; ok {
		if tok.IssuedAt, err = numericDate(raw); err != nil {
			return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"iat" is not a NumericDate`))
		}
		if tok.IssuedAt.After(now.Add(leeway)) {
			return nil, reason.New(reason.TokenIssuedInFuture)
		}
	}
	if raw, ok := claims["sub"]; ok {
		s, isStr := raw.(string)
		if !isStr {
			return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"sub" is not a string`))
		}
		tok.Subject = s
	}
	switch aud := claims["aud"].(type) {
	case nil:
		if _, present := claims["aud"]; present {
			return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"aud" is null`))
		}
	case string:
		tok.Audience = []string{aud}
	case []any:
		tok.Audience = make([]string, len(aud))
		for i, a := range aud {
			s, isStr := a.(string)
			if !isStr {
				return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"aud" holds a non-string`))
			}
			tok.Audience[i] = s
		}
	default:
		return nil, reason.Wrap(reason.TokenMalformed, errors.New(`"aud" is neither string nor array`))
	}
	return tok, nil
}

// stringClaim returns the issuer claim: absent means no trusted issuer,
// a non-string means a malformed token.
func stringClaim(claims map[string]any, name string) (string, error) {
	raw, ok := claims[name]
	if !ok {
		return "", reason.Wrap(reason.TokenIssuer, errors.New(`no "`+name+`" claim`))
	}
	s, ok := raw.(string)
	if !ok {
		return "", reason.Wrap(reason.TokenMalformed, errors.New(`"`+name+`" is not a string`))
	}
	return s, nil
}

// NumericDates beyond ±maxNumericDate seconds (year 9999) are clamped, so
// absurd values cannot overflow time arithmetic.
const maxNumericDate = 253402300799

// numericDate decodes an RFC 7519 NumericDate: a JSON integer or
// floating-point number of seconds since the epoch.
func numericDate(v any) (time.Time, error) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, errors.New("not a number")
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return time.Unix(min(max(i, -maxNumericDate), maxNumericDate), 0), nil
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		// Only integers too large for int64 get here.
		if strings.HasPrefix(string(n), "-") {
			return time.Unix(-maxNumericDate, 0), nil
		}
		return time.Unix(maxNumericDate, 0), nil
	}
	f = min(max(f, -maxNumericDate), maxNumericDate)
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), nil
}

// unixNanoSat is t.UnixNano, saturated instead of overflowing.
func unixNanoSat(t time.Time) int64 {
	const maxSec = math.MaxInt64/int64(time.Second) - 1
	switch s := t.Unix(); {
	case s >= maxSec:
		return math.MaxInt64
	case s <= -maxSec:
		return math.MinInt64
	}
	return t.UnixNano()
}
