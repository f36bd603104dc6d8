// Package jwks verifies bearer JWTs against the remote key sets (JWKS) of
// trusted issuers. Its Verifier sits on the request path of every check, so
// it keeps the hot path to a hash and a map lookup: a token that verified
// once is served from a bounded cache until it expires.
//
// Invariants:
//
//   - Every error returned by Verify is a *reason.Error whose code says
//     which rule failed; its message never contains the token.
//   - Only compact JWS is accepted. JWE, nested JWTs, unknown "crit"
//     extensions and "b64" are refused; keys or key URLs in the header
//     (jku, x5u, jwk, x5c) are refused outright and never fetched.
//   - The issuer is chosen from the payload's "iss" before verification,
//     and only that issuer's keys are consulted: a key of issuer A never
//     verifies a token claiming issuer B, even when the kid collides.
//   - "alg" must be on the issuer's allowlist and must fit the key type:
//     ES256/384/512 only with EC P-256/384/521 keys, RS*/PS* only with RSA
//     keys of 2048 to 8192 bits, EdDSA only with Ed25519 keys. HS* is
//     verified only with the issuer's configured secret, never with key set
//     material, so an RS256→HS256 confusion cannot succeed. "none" is never
//     accepted.
//   - Key sets are fetched over https (http only for loopback hosts, unless
//     InsecureHTTP), with bounded size and time. A failed or empty refresh
//     never drops keys: the last good set keeps serving.
//   - A token whose kid is unknown (or whose signature no current key
//     verifies) triggers at most one key set refresh per issuer per
//     UnknownKeyRefreshInterval, shared by all concurrent requests, so a
//     rotated key is picked up without waiting for the schedule while a
//     flood of forged tokens cannot hammer the IdP.
//   - The token cache keys entries by SHA-256 of the token, never storing
//     the token itself; it is bounded by entries and approximate bytes,
//     checks exp on every hit, forgets tokens whose signing key left the
//     key set, and never caches a rejection.
//   - Nothing is registered globally: metrics exist only when
//     WithRegisterer is given.
package jwks
