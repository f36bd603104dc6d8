package session

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

const (
	// idBytes is the entropy of a session ID.
	idBytes = 32
	// idLen is the length of its base64url encoding without padding.
	idLen = 43
)

// idEncoding rejects non-canonical encodings (non-zero trailing bits), so
// one ID has exactly one spelling.
var idEncoding = base64.RawURLEncoding.Strict()

// newID returns a fresh session ID and the SHA-256 of its 32 bytes.
func newID() (id string, h [32]byte) {
	var raw [idBytes]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand since Go 1.24)
	return idEncoding.EncodeToString(raw[:]), sha256.Sum256(raw[:])
}

// parseID validates id and returns the SHA-256 of its decoded bytes. It
// does not allocate.
func parseID(id string) (h [32]byte, ok bool) {
	if len(id) != idLen { // covers "", oversized input and wrong decoded length
		return h, false
	}
	var src [idLen]byte
	for i := 0; i < idLen; i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return h, false
		}
		src[i] = c
	}
	var raw [idBytes]byte
	n, err := idEncoding.Decode(raw[:], src[:])
	if err != nil || n != idBytes {
		return h, false
	}
	return sha256.Sum256(raw[:]), true
}

// errMalformed is returned for every malformed ID; it carries no input.
var errMalformed = reason.New(reason.SessionMalformed)

// IDHash returns Record.IDHash for id (hex SHA-256 of its decoded bytes),
// or a reason.SessionMalformed error.
func IDHash(id string) (string, error) {
	h, ok := parseID(id)
	if !ok {
		return "", errMalformed
	}
	return hex.EncodeToString(h[:]), nil
}

// Fingerprint returns a 12-hex-digit SHA-256 prefix of s for logs: enough
// to correlate, useless to replay. Use it for session IDs and tokens.
func Fingerprint(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// IDFromRequest finds the session ID in lowercase request headers (as Envoy
// sends them): the header headerName wins when present, else the first
// cookie named cookieName in the "cookie" header. present reports whether
// either carried one; id is returned as sent (quotes around a cookie value
// removed) and still needs validation, which every Store method does. It
// does not allocate. An empty headerName or cookieName disables that
// source.
func IDFromRequest(headers map[string]string, cookieName, headerName string) (id string, present bool) {
	if headerName != "" {
		if v, ok := headers[headerName]; ok {
			return v, true
		}
	}
	if cookieName == "" {
		return "", false
	}
	c, ok := headers["cookie"]
	if !ok {
		return "", false
	}
	return cookieValue(c, cookieName)
}

// cookieValue returns the value of the first cookie-pair named name in a
// Cookie header (RFC 6265 §4.2.1, parsed leniently as browsers send it:
// pairs separated by ";", optional whitespace around names and values,
// optional double quotes around the value).
func cookieValue(header, name string) (string, bool) {
	for rest := header; ; {
		seg, tail, more := strings.Cut(rest, ";")
		if n, v, ok := splitPair(seg); ok && n == name {
			return v, true
		}
		if !more {
			return "", false
		}
		rest = tail
	}
}

// splitPair splits one cookie-pair into its trimmed name and unquoted
// value. ok is false for a segment without "=" or with an empty name.
func splitPair(seg string) (name, value string, ok bool) {
	eq := strings.IndexByte(seg, '=')
	if eq < 0 {
		return "", "", false
	}
	name = trimOWS(seg[:eq])
	if name == "" {
		return "", "", false
	}
	value = trimOWS(seg[eq+1:])
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return name, value, true
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// StripCookie removes every cookie-pair named name from a Cookie header
// value, so the session ID never reaches the upstream. Every other pair is
// kept byte for byte, with the separator that preceded it; empty segments
// are dropped and the first kept pair loses its leading whitespace.
// removed reports whether anything was removed; when the session cookie
// was the only one the result is "" (drop the header). Without a match it
// returns cookieHeader unchanged and does not allocate.
func StripCookie(cookieHeader, name string) (string, bool) {
	if name == "" {
		return cookieHeader, false
	}
	if _, found := cookieValue(cookieHeader, name); !found {
		return cookieHeader, false
	}
	var b strings.Builder
	b.Grow(len(cookieHeader))
	first := true
	for rest := cookieHeader; ; {
		seg, tail, more := strings.Cut(rest, ";")
		n, _, isPair := splitPair(seg)
		if !(isPair && n == name) && trimOWS(seg) != "" {
			if first {
				b.WriteString(strings.TrimLeft(seg, " \t"))
				first = false
			} else {
				b.WriteByte(';')
				b.WriteString(seg)
			}
		}
		if !more {
			break
		}
		rest = tail
	}
	return b.String(), true
}
