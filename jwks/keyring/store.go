package keyring

import (
	"context"
	"crypto"
	"time"
)

// State is where a key is in its life.
type State string

// Key states. A key is created as StateNext (or StateActive when there is
// no active key to take over from), becomes StateActive, then
// StateRetiring, and is finally removed from the store ("expired"). A
// revoked key leaves the published set at once and is kept as a
// tombstone without key material until GracePeriod has passed, so every
// replica learns of the revocation.
const (
	StateNext     State = "next"     // published, not yet signing
	StateActive   State = "active"   // signs, published; exactly one per store
	StateRetiring State = "retiring" // no longer signs, published until RetiredAt+GracePeriod
	StateRevoked  State = "revoked"  // not published, not signing; material destroyed
)

// published reports whether keys in s appear in the JWKS.
func (s State) published() bool { return s == StateNext || s == StateActive || s == StateRetiring }

// Record is the metadata of one key, as kept by a Store.
type Record struct {
	KID   string    `json:"kid"` // RFC 7638 thumbprint of the public key
	Alg   Algorithm `json:"alg"`
	State State     `json:"state"`
	// CreatedAt is when the key was created and first published.
	CreatedAt time.Time `json:"created_at"`
	// ActivateAt is when a next key is scheduled to start signing; never
	// earlier than CreatedAt+PublishAhead. Zero for a key created active.
	ActivateAt time.Time `json:"activate_at,omitzero"`
	// ActivatedAt is when the key started signing.
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	// RetiredAt is when the key stopped signing.
	RetiredAt time.Time `json:"retired_at,omitzero"`
	// RevokedAt is when the key was revoked.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// StoredKey is a key as loaded from a Store. Signer is nil for revoked
// keys; it never exposes the private key of a PKCS #11 store.
type StoredKey struct {
	Record
	Signer crypto.Signer
}

// GenerateFunc creates new key material inside an Update. The key is
// persisted only if the Update's function returns a record for it.
type GenerateFunc func(KeySpec) (StoredKey, error)

// UpdateFunc computes the complete new set of records from the current
// keys. Records are matched to material by KID: a current key missing
// from the result is destroyed (expired), a generated key missing from it
// is discarded, and a key whose record is StateRevoked loses its material
// but keeps the record.
type UpdateFunc func(current []StoredKey, generate GenerateFunc) ([]Record, error)

// Store persists the keys of a Keyring. Several processes may share one
// store (the redis store is made for it); Update is the only way to
// change it and is serialised among all of them.
//
// Implementations in this package: FileStore, RedisStore, PKCS11Store.
type Store interface {
	// Load returns every key in the store, in no particular order.
	Load(ctx context.Context) ([]StoredKey, error)
	// Update runs fn under the store's exclusive lock with the current
	// keys, persists the records it returns, applies the material rules
	// of UpdateFunc, releases the lock, notifies other processes, and
	// returns the keys as committed. When fn fails, nothing changes.
	Update(ctx context.Context, fn UpdateFunc) ([]StoredKey, error)
}

// Watcher is implemented by stores that push change notifications across
// processes. Without it, a Keyring sees changes made elsewhere at its
// next poll.
type Watcher interface {
	// Watch subscribes to changes. Once it returns nil, the channel
	// receives a value (coalesced, never blocking the store) after every
	// committed Update of any process, until ctx ends; then the store
	// closes it.
	Watch(ctx context.Context) (<-chan struct{}, error)
}

// KeyInfo describes a key for List.
type KeyInfo struct {
	Record
	// ExpiresAt is when a retiring key or a revocation tombstone leaves
	// the store: RetiredAt (or RevokedAt) + GracePeriod. Zero otherwise.
	ExpiresAt time.Time
	// Published reports whether the key is in the JWKS.
	Published bool
}
