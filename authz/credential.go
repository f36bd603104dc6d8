package authz

import "strings"

// bearer extracts the token of an "Authorization: Bearer <token>" value.
// The scheme is case-insensitive (RFC 9110 §11.1). present is false when the
// header is absent or carries another scheme, so a Basic credential meant
// for the upstream service is "no bearer credential", not a bad one.
func bearer(h string) (token string, present bool) {
	const scheme = "bearer"
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	rest := h[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // e.g. "BearerXYZ": some other scheme
	}
	return strings.Trim(rest, " \t"), true
}
