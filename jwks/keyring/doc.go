// Package keyring makes Tollgate an issuer: it mints the short-lived
// internal JWT each allowed request carries to its destination service,
// publishes the public keys that verify it (JWKS and OpenID discovery),
// and rotates its signing keys on schedule without a single failed
// verification downstream. The private keys live in a Store: files, Redis
// shared by every replica (encrypted with a key-encryption key), or a
// PKCS #11 token they never leave.
//
// Key life: next (published, not signing) → active (signing, published;
// exactly one per store) → retiring (published, not signing, for
// GracePeriod) → expired (removed). A next key is published at least
// PublishAhead before it signs, and PublishAhead ≥ the Cache-Control
// max-age of the published set, so a verifier that caches the set as told
// already holds a key when the first token signed by it arrives; a retired
// key stays published for GracePeriod ≥ 2×TTL, so every token it signed
// expires before it disappears. Revoke is the exception: it withdraws a
// key at once (see Keyring.Revoke).
//
// Invariants:
//
//   - kid is the RFC 7638 SHA-256 thumbprint of the public key; a store
//     whose key material does not match its kid is refused.
//   - The published documents contain public members only (kty, crv, x,
//     y, n, e, plus kid, alg, use); they are built when the keys change,
//     never per request.
//   - Internal tokens carry exactly: header alg, kid, typ=JWT; claims iss,
//     sub (when given), aud (one value, never "" or "*"), iat, nbf = iat,
//     exp = iat+TTL, jti (random 128-bit) and the configured identity
//     claims. Caller claims can never set a registered claim.
//   - A minted token is reused for the same identity, audience and claims
//     until half its lifetime has passed; the reuse cache is bounded and
//     dropped whenever the active key changes or a key is revoked, and an
//     entry is never served for a key other than the active one.
//   - Every Mint error is a *reason.Error with code
//     reason.SigningUnavailable.
//   - Only the owner goroutine (and explicit Rotate/Revoke calls) change
//     the store, always under the store's lock; readers see immutable
//     snapshots swapped atomically.
//   - Nothing is registered globally: metrics exist only when
//     WithRegisterer is given.
package keyring
