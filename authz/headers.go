package authz

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// maxHeaderValue bounds a claim rendered into a header; Envoy's default
// limit for all request headers together is 60 KiB.
const maxHeaderValue = 8 << 10

// claimValue renders a claim for an HTTP header: strings as they are,
// numbers and booleans in JSON form, arrays joined with commas, objects as
// compact JSON. CR, LF, NUL and other control characters are dropped so a
// claim can never split or end a header. ok is false for a missing or null
// claim, or one too long to send.
func claimValue(v any) (string, bool) {
	var s string
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		s = x
	case json.Number:
		s = x.String()
	case bool:
		s = strconv.FormatBool(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		var b strings.Builder
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if es, ok := e.(string); ok {
				b.WriteString(es)
			} else {
				j, err := json.Marshal(e)
				if err != nil {
					return "", false
				}
				b.Write(j)
			}
		}
		s = b.String()
	default:
		j, err := json.Marshal(x)
		if err != nil {
			return "", false
		}
		s = string(j)
	}
	s = sanitize(s)
	if len(s) > maxHeaderValue {
		return "", false
	}
	return s, true
}

// sanitize removes control characters other than tab. It allocates only
// when something must be removed.
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c >= 0x20 || c == '\t') && c != 0x7f {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// denyBody is the small JSON body of a denial. The request ID comes from the
// client side, so it is included only when short and made of safe
// characters; the error text is a fixed description, never input.
func denyBody(code reason.Code, requestID string) string {
	var b strings.Builder
	b.Grow(64 + len(requestID))
	b.WriteString(`{"error":`)
	b.WriteString(strconv.Quote(code.Description()))
	if safeID(requestID) {
		b.WriteString(`,"request_id":"`)
		b.WriteString(requestID)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func safeID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}
