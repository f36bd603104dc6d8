package keyring

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

type opKind uint8

const (
	opSync   opKind = iota // apply due transitions only
	opRotate               // Rotate
	opRevoke               // Revoke(kid)
)

type op struct {
	kind opKind
	kid  string // opRevoke
}

// outcome reports what a plan did, for metrics and return values.
type outcome struct {
	promoted int    // next→active promotions
	revoked  string // kid revoked by this plan ("" if none)
	result   Record // Rotate: the key that is or will become active
}

// plan computes the new record set from the current keys at time now.
// It is the whole key schedule; every store applies it under its lock, so
// whichever replica runs it, the outcome is the same. Steps, in order:
//
//  1. Retiring keys and revocation tombstones older than GracePeriod are
//     dropped (expired: their material is destroyed). Should several
//     keys claim to be active, the most recently activated one stays
//     active and the others retire now.
//  2. Revoke: the key becomes a tombstone at once; if it was the active
//     key, a fresh key is generated and made active immediately (it
//     cannot have been published ahead: verifiers learn it on their next
//     refresh).
//  3. A next key whose ActivateAt has come is promoted: the active key
//     retires, the next key signs.
//  4. With no active key at all (new store, or its active key vanished),
//     a fresh key is generated and made active immediately.
//  5. Rotate: if step 3 promoted a key, that was the rotation; else a
//     next key published at least PublishAhead ago is promoted now; a next key published more recently is rescheduled to
//     CreatedAt+PublishAhead (the earliest safe moment); with no next
//     key, one is created and scheduled at now+PublishAhead.
//  6. With no next key and the active key due to hand over within
//     PublishAhead (ActivatedAt+RotationPeriod−PublishAhead ≤ now), a
//     next key is created, scheduled at the later of
//     ActivatedAt+RotationPeriod and now+PublishAhead.
func (k *Keyring) plan(cur []StoredKey, gen GenerateFunc, now time.Time, o op, out *outcome) ([]Record, error) {
	cfg := k.cfg
	recs := make([]Record, 0, len(cur)+2)
	for _, c := range cur {
		switch c.State {
		case StateNext, StateActive, StateRetiring, StateRevoked:
		default:
			return nil, fmt.Errorf("key %s: unknown state %q", c.KID, c.State)
		}
		recs = append(recs, c.Record)
	}

	// 1. Expire.
	recs = slices.DeleteFunc(recs, func(r Record) bool {
		switch r.State {
		case StateRetiring:
			return !r.RetiredAt.Add(cfg.GracePeriod).After(now)
		case StateRevoked:
			return !r.RevokedAt.Add(cfg.GracePeriod).After(now)
		}
		return false
	})
	if a := activeIndexes(recs); len(a) > 1 {
		keep := a[0]
		for _, i := range a[1:] {
			if recs[i].ActivatedAt.After(recs[keep].ActivatedAt) {
				keep = i
			}
		}
		for _, i := range a {
			if i != keep {
				recs[i].State, recs[i].RetiredAt = StateRetiring, now
			}
		}
	}

	create := func(activeNow bool, activateAt time.Time) (int, error) {
		sk, err := gen(KeySpec{Alg: cfg.Algorithm, RSABits: cfg.RSABits})
		if err != nil {
			return -1, fmt.Errorf("generating key: %w", err)
		}
		r := Record{KID: sk.KID, Alg: cfg.Algorithm, CreatedAt: now}
		if activeNow {
			r.State, r.ActivatedAt = StateActive, now
		} else {
			r.State, r.ActivateAt = StateNext, activateAt
		}
		recs = append(recs, r)
		return len(recs) - 1, nil
	}
	promoted := -1
	promote := func(n int) {
		if a := find(recs, StateActive); a >= 0 {
			recs[a].State, recs[a].RetiredAt = StateRetiring, now
		}
		recs[n].State, recs[n].ActivatedAt = StateActive, now
		out.promoted++
		promoted = n
	}

	// 2. Revoke.
	if o.kind == opRevoke {
		i := slices.IndexFunc(recs, func(r Record) bool { return r.KID == o.kid })
		if i < 0 {
			return nil, ErrUnknownKey
		}
		if recs[i].State != StateRevoked {
			recs[i].State, recs[i].RevokedAt = StateRevoked, now
			out.revoked = o.kid
		}
	}

	// 3. Scheduled promotion: the earliest due next key.
	if n := dueNext(recs, now, cfg.PublishAhead); n >= 0 {
		promote(n)
	}

	// 4. Ensure an active key.
	if find(recs, StateActive) < 0 {
		if _, err := create(true, time.Time{}); err != nil {
			return nil, err
		}
	}

	// 5. Rotate.
	if o.kind == opRotate {
		n := earliestNext(recs)
		switch {
		case promoted >= 0:
			// Step 3 already handed over: that is the rotation asked for.
			out.result = recs[promoted]
		case n >= 0 && !recs[n].CreatedAt.Add(cfg.PublishAhead).After(now):
			promote(n)
			out.result = recs[n]
		case n >= 0:
			if at := recs[n].CreatedAt.Add(cfg.PublishAhead); at.Before(recs[n].ActivateAt) {
				recs[n].ActivateAt = at
			}
			out.result = recs[n]
		default:
			i, err := create(false, now.Add(cfg.PublishAhead))
			if err != nil {
				return nil, err
			}
			out.result = recs[i]
		}
	}

	// 6. Ensure a next key in time.
	if a := find(recs, StateActive); a >= 0 && earliestNext(recs) < 0 {
		handover := recs[a].ActivatedAt.Add(cfg.RotationPeriod)
		if !handover.Add(-cfg.PublishAhead).After(now) {
			if _, err := create(false, later(handover, now.Add(cfg.PublishAhead))); err != nil {
				return nil, err
			}
		}
	}
	return recs, nil
}

// nextEvent returns when plan has work to do next for recs: the earliest
// of a promotion, a next key's creation, an expiry; now when there is no
// active key; zero when nothing is scheduled.
func nextEvent(recs []Record, cfg Config, now time.Time) time.Time {
	var t time.Time
	at := func(x time.Time) {
		if t.IsZero() || x.Before(t) {
			t = x
		}
	}
	active, haveNext := -1, false
	for i, r := range recs {
		switch r.State {
		case StateActive:
			active = i
		case StateNext:
			haveNext = true
			at(later(r.ActivateAt, r.CreatedAt.Add(cfg.PublishAhead)))
		case StateRetiring:
			at(r.RetiredAt.Add(cfg.GracePeriod))
		case StateRevoked:
			at(r.RevokedAt.Add(cfg.GracePeriod))
		}
	}
	if active < 0 {
		return now
	}
	if !haveNext {
		at(recs[active].ActivatedAt.Add(cfg.RotationPeriod - cfg.PublishAhead))
	}
	return t
}

func activeIndexes(recs []Record) []int {
	var a []int
	for i, r := range recs {
		if r.State == StateActive {
			a = append(a, i)
		}
	}
	return a
}

func find(recs []Record, s State) int {
	return slices.IndexFunc(recs, func(r Record) bool { return r.State == s })
}

// earliestNext returns the next key scheduled first, or -1.
func earliestNext(recs []Record) int {
	n := -1
	for i, r := range recs {
		if r.State == StateNext && (n < 0 || r.ActivateAt.Before(recs[n].ActivateAt)) {
			n = i
		}
	}
	return n
}

// dueNext returns the earliest next key whose activation time has come
// and that has been published for at least publishAhead, or -1.
func dueNext(recs []Record, now time.Time, publishAhead time.Duration) int {
	n := earliestNext(recs)
	if n < 0 {
		return -1
	}
	r := recs[n]
	if r.ActivateAt.After(now) || r.CreatedAt.Add(publishAhead).After(now) {
		return -1
	}
	return n
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Errors returned by Keyring methods. Mint wraps its errors in a
// *reason.Error with code reason.SigningUnavailable; errors.Is still finds
// these.
var (
	// ErrUnknownKey: Revoke was given a kid the store does not hold.
	ErrUnknownKey = errors.New("keyring: unknown key")
	// ErrNoActiveKey: Mint was called before Start, or the store holds no
	// usable active key.
	ErrNoActiveKey = errors.New("keyring: no active signing key")
	// ErrInvalidAudience: the audience is empty or "*".
	ErrInvalidAudience = errors.New(`keyring: audience must be a single value, not empty or "*"`)
)
