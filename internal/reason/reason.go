// Package reason defines the stable machine codes that explain why a Check
// was denied or failed. A code is at once the deny reason in logs, the label
// of the checks metric and the basis of the client-facing description, so
// codes never change meaning once released.
//
// Invariant: the Description of a code is a fixed string; it never contains
// input the caller controls (tokens, header values, claim values).
package reason

import "errors"

// Code is a stable, lower_snake_case reason code.
type Code string

// Credential and token codes (401).
const (
	OK                  Code = "ok"
	CredentialMissing   Code = "credential_missing"
	TokenMalformed      Code = "token_malformed"
	TokenTooLarge       Code = "token_too_large"
	TokenUnsupported    Code = "token_unsupported" // JWE, nested JWT, unknown crit
	TokenAlgorithm      Code = "token_algorithm_not_allowed"
	TokenHeaderKey      Code = "token_embedded_key" // jku/x5u/jwk/x5c present
	TokenSignature      Code = "token_signature_invalid"
	TokenUnknownKey     Code = "token_unknown_key"
	TokenIssuer         Code = "token_issuer_unknown"
	TokenExpired        Code = "token_expired"
	TokenMissingExpiry  Code = "token_missing_exp"
	TokenNotYetValid    Code = "token_not_yet_valid"
	TokenIssuedInFuture Code = "token_iat_in_future"
	TokenAudience       Code = "token_audience_mismatch"
	TokenMissingAud     Code = "token_audience_missing"
)

// Session codes (401, or 503 for the store).
const (
	SessionMalformed Code = "session_malformed"
	SessionNotFound  Code = "session_not_found" // unknown or revoked
	SessionExpired   Code = "session_expired"   // idle or absolute expiry
)

// Routing and policy codes (403, or 500 for policy failures).
const (
	NoService     Code = "no_matching_service"
	PolicyDenied  Code = "policy_denied"
	PolicyError   Code = "policy_error"   // evaluation error or wrongly typed result
	PolicyTimeout Code = "policy_timeout" // evaluation exceeded policy.timeout
)

// Infrastructure codes (5xx or gRPC errors).
const (
	JWKSUnavailable         Code = "jwks_unavailable"
	SessionStoreUnavailable Code = "session_store_unavailable"
	SigningUnavailable      Code = "signing_unavailable" // internal token could not be minted
	Internal                Code = "internal_error"
)

var descriptions = map[Code]string{
	OK:                      "ok",
	CredentialMissing:       "credential missing",
	TokenMalformed:          "token malformed",
	TokenTooLarge:           "token too large",
	TokenUnsupported:        "token type not supported",
	TokenAlgorithm:          "token algorithm not allowed",
	TokenHeaderKey:          "token carries an embedded key reference",
	TokenSignature:          "token signature invalid",
	TokenUnknownKey:         "token signing key unknown",
	TokenIssuer:             "token issuer not trusted",
	TokenExpired:            "token expired",
	TokenMissingExpiry:      "token has no expiry",
	TokenNotYetValid:        "token not yet valid",
	TokenIssuedInFuture:     "token issued in the future",
	TokenAudience:           "token audience not accepted",
	TokenMissingAud:         "token has no audience",
	SessionMalformed:        "session id malformed",
	SessionNotFound:         "session not found",
	SessionExpired:          "session expired",
	NoService:               "no service matches the request",
	PolicyDenied:            "denied by policy",
	PolicyError:             "policy evaluation failed",
	PolicyTimeout:           "policy evaluation timed out",
	SessionStoreUnavailable: "session store unavailable",
	SigningUnavailable:      "internal token signing unavailable",
	JWKSUnavailable:         "signing keys unavailable",
	Internal:                "internal error",
}

// Description returns the fixed human-readable text for c, suitable for
// RFC 6750 error_description and for JSON bodies.
func (c Code) Description() string {
	if d, ok := descriptions[c]; ok {
		return d
	}
	return string(c)
}

// Error is a failure carrying a stable code. Err, when set, is the
// underlying cause for logs; it must not contain secrets either.
type Error struct {
	Code Code
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Err.Error()
	}
	return string(e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, reason.New(code)) match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Err == nil && t.Code == e.Code
}

// New returns an *Error with code c and no cause.
func New(c Code) *Error { return &Error{Code: c} }

// Wrap returns an *Error with code c and cause err.
func Wrap(c Code, err error) *Error { return &Error{Code: c, Err: err} }

// Of returns the code carried by err, or Internal when err carries none.
// Of(nil) is OK.
func Of(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
