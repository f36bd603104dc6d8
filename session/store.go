package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// Store resolves and manages sessions. *MemoryStore and *RedisStore
// implement it with the same semantics. Every method validates IDs before
// any store access; Lookup, Get and Revoke return *reason.Error values
// (see the package invariants).
type Store interface {
	// Create stores a new session and returns its ID, which appears
	// nowhere else: keep it only in the client's cookie. With
	// Config.MaxPerSubject > 0 the subject's oldest sessions beyond that
	// number are revoked.
	Create(ctx context.Context, ns NewSession) (id string, rec Record, err error)
	// Lookup is the request hot path: it validates id, reads the record
	// and slides its idle expiry (at most once per IdleRefreshInterval).
	Lookup(ctx context.Context, id string) (Record, error)
	// Get reads the record without sliding (admin).
	Get(ctx context.Context, id string) (Record, error)
	// Revoke deletes the session (logout) and invalidates every replica's
	// cache. SessionNotFound if there was none, SessionExpired if it had
	// expired (its remains are deleted all the same).
	Revoke(ctx context.Context, id string) error
	// RevokeSubject revokes every session of subject and returns how many
	// live sessions it ended.
	RevokeSubject(ctx context.Context, subject string) (int, error)
	// ListSubject returns subject's live sessions, oldest first.
	ListSubject(ctx context.Context, subject string) ([]Record, error)
	// Start begins background work (pub/sub subscriber, janitor). The
	// store is usable without it, minus that work.
	Start(ctx context.Context) error
	// Stop ends background work and releases connections the store owns,
	// within ctx's deadline. It is safe to call more than once and after
	// a failed or missing Start.
	Stop(ctx context.Context) error
}

var (
	_ Store = (*MemoryStore)(nil)
	_ Store = (*RedisStore)(nil)
)

// ErrBreakerOpen is the cause of SessionStoreUnavailable while the circuit
// breaker fails calls without trying Redis.
var ErrBreakerOpen = errors.New("session store circuit breaker open")

var (
	errNotFound = reason.New(reason.SessionNotFound)
	errExpired  = reason.New(reason.SessionExpired)
)

// New builds the store cfg.Store names.
func New(cfg Config, opts ...Option) (Store, error) {
	switch cfg.withDefaults().Store {
	case StoreMemory:
		return NewMemory(cfg, opts...)
	case StoreRedis:
		return NewRedis(cfg, opts...)
	default:
		return nil, fmt.Errorf("session: store: must be memory or redis")
	}
}

// unavailable wraps a store failure.
func unavailable(op string, err error) error {
	return reason.Wrap(reason.SessionStoreUnavailable, fmt.Errorf("session %s: %w", op, err))
}
