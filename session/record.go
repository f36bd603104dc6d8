package session

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Bounds on what a session may carry. They keep records small, since a
// record is read on every request.
const (
	MaxSubjectBytes       = 256
	MaxClaimsBytes        = 16 << 10 // JSON-encoded
	MaxMetadataEntries    = 16
	MaxMetadataKeyBytes   = 64
	MaxMetadataValueBytes = 512
)

// ErrInvalid wraps every rejection of a NewSession by Create. Its messages
// are fixed strings naming the field, never the field's value.
var ErrInvalid = errors.New("invalid session")

// Record is a stored session. Claims and Metadata are shared with the
// store's cache: treat them as read-only. Times have millisecond
// precision and are UTC.
type Record struct {
	// IDHash is the hex SHA-256 of the session ID's bytes.
	IDHash   string            `json:"id_hash"`
	Subject  string            `json:"subject"`
	Claims   map[string]any    `json:"claims,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// CreatedAt is the creation time.
	CreatedAt time.Time `json:"created_at"`
	// LastSeen is the last time a Lookup slid the idle expiry (throttled
	// to once per Config.IdleRefreshInterval).
	LastSeen time.Time `json:"last_seen"`
	// IdleExpiresAt is LastSeen + IdleTimeout, capped at ExpiresAt.
	IdleExpiresAt time.Time `json:"idle_expires_at"`
	// ExpiresAt is the absolute expiry: CreatedAt + NewSession.TTL.
	ExpiresAt time.Time `json:"expires_at"`
}

// NewSession is the input of Store.Create.
type NewSession struct {
	// Subject identifies the user. Required, valid UTF-8, at most 256
	// bytes.
	Subject string
	// Claims (roles, tenant, …) are copied into the internal JWT. They
	// round-trip through JSON: numbers come back as float64, slices as
	// []any. At most 16 KiB encoded.
	Claims map[string]any
	// Metadata describes the session (device, IP, user agent). At most
	// 16 entries, keys 1–64 bytes, values at most 512 bytes, UTF-8.
	Metadata map[string]string
	// TTL is the absolute lifetime, at most Config.AbsoluteTimeout.
	// Default (0): Config.AbsoluteTimeout.
	TTL time.Duration
}

// policy holds the timing rules shared by both stores.
type policy struct {
	idle, absolute, refresh time.Duration
	grace                   time.Duration
	maxPerSubject           int
}

func newPolicy(cfg Config, o options) policy {
	return policy{
		idle:          cfg.IdleTimeout,
		absolute:      cfg.AbsoluteTimeout,
		refresh:       cfg.IdleRefreshInterval,
		grace:         o.expiredGrace,
		maxPerSubject: cfg.MaxPerSubject,
	}
}

// absEnd is the effective absolute expiry: the record's, or the configured
// absolute timeout after creation when that is earlier.
func (p policy) absEnd(r *Record) time.Time {
	end := r.CreatedAt.Add(p.absolute)
	if r.ExpiresAt.Before(end) {
		return r.ExpiresAt
	}
	return end
}

// expired reports whether r is past its idle or absolute expiry at now.
func (p policy) expired(r *Record, now time.Time) bool {
	return !now.Before(r.IdleExpiresAt) || !now.Before(p.absEnd(r))
}

// refreshDue reports whether a Lookup at now must slide the idle expiry.
func (p policy) refreshDue(r *Record, now time.Time) bool {
	return now.Sub(r.LastSeen) >= p.refresh
}

// slide moves r's idle expiry to now + idle, capped at the absolute end.
func (p policy) slide(r *Record, now time.Time) {
	r.LastSeen = now
	r.IdleExpiresAt = now.Add(p.idle)
	if end := p.absEnd(r); r.IdleExpiresAt.After(end) {
		r.IdleExpiresAt = end
	}
}

// purgeAt is when an (expired) record may be forgotten.
func (p policy) purgeAt(r *Record) time.Time {
	end := p.absEnd(r)
	if r.IdleExpiresAt.Before(end) {
		end = r.IdleExpiresAt
	}
	return end.Add(p.grace)
}

// prepared is a validated NewSession with its encoded parts.
type prepared struct {
	rec                Record // without IDHash
	claimsJSON, mdJSON string // "" when empty
}

// prepare validates ns and builds the record created at now.
func (p policy) prepare(ns NewSession, now time.Time) (prepared, error) {
	var pr prepared
	invalid := func(msg string) error { return fmt.Errorf("%w: %s", ErrInvalid, msg) }
	if ns.Subject == "" || len(ns.Subject) > MaxSubjectBytes || !utf8.ValidString(ns.Subject) {
		return pr, invalid(fmt.Sprintf("subject must be 1 to %d bytes of UTF-8", MaxSubjectBytes))
	}
	for i := 0; i < len(ns.Subject); i++ {
		if ns.Subject[i] < 0x20 || ns.Subject[i] == 0x7f {
			return pr, invalid("subject must not contain control characters")
		}
	}
	ttl := ns.TTL
	switch {
	case ttl == 0:
		ttl = p.absolute
	case ttl < time.Millisecond:
		return pr, invalid("ttl must be positive")
	case ttl > p.absolute:
		return pr, invalid("ttl must not exceed the absolute timeout")
	}
	if len(ns.Metadata) > MaxMetadataEntries {
		return pr, invalid(fmt.Sprintf("at most %d metadata entries", MaxMetadataEntries))
	}
	for k, v := range ns.Metadata {
		if k == "" || len(k) > MaxMetadataKeyBytes || len(v) > MaxMetadataValueBytes ||
			!utf8.ValidString(k) || !utf8.ValidString(v) {
			return pr, invalid(fmt.Sprintf("metadata keys must be 1 to %d bytes and values at most %d bytes, UTF-8",
				MaxMetadataKeyBytes, MaxMetadataValueBytes))
		}
	}
	if len(ns.Claims) > 0 {
		b, err := json.Marshal(ns.Claims)
		if err != nil {
			return pr, invalid("claims must be encodable as JSON")
		}
		if len(b) > MaxClaimsBytes {
			return pr, invalid(fmt.Sprintf("claims must encode to at most %d bytes", MaxClaimsBytes))
		}
		pr.claimsJSON = string(b)
		// Decode our own encoding so both stores hand out the same types.
		if pr.rec.Claims, err = decodeClaims(pr.claimsJSON); err != nil {
			return pr, invalid("claims must be encodable as JSON")
		}
	}
	if len(ns.Metadata) > 0 {
		b, _ := json.Marshal(ns.Metadata) // map[string]string always encodes
		pr.mdJSON = string(b)
		pr.rec.Metadata = make(map[string]string, len(ns.Metadata))
		for k, v := range ns.Metadata {
			pr.rec.Metadata[k] = v
		}
	}
	now = msTime(now)
	pr.rec.Subject = ns.Subject
	pr.rec.CreatedAt = now
	pr.rec.ExpiresAt = now.Add(ttl.Truncate(time.Millisecond))
	p.slide(&pr.rec, now)
	return pr, nil
}

func decodeClaims(s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeMetadata(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// msTime truncates t to milliseconds in UTC, the precision both stores
// keep.
func msTime(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

func hashHex(h [32]byte) string { return hex.EncodeToString(h[:]) }

// parseHashHex is the inverse of hashHex.
func parseHashHex(s string) (h [32]byte, ok bool) {
	if len(s) != 64 {
		return h, false
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err == nil
}
