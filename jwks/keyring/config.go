package keyring

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultTTL              = 60 * time.Second
	DefaultAlgorithm        = ES256
	DefaultRotationPeriod   = 720 * time.Hour
	DefaultGracePeriod      = 2 * time.Hour
	DefaultPublishAhead     = 10 * time.Minute
	DefaultPollInterval     = 5 * time.Second
	DefaultMintCacheEntries = 10000
	// DefaultMaxAge is the JWKS Cache-Control max-age when PublishAhead
	// allows it; otherwise MaxAge defaults to PublishAhead/2.
	DefaultMaxAge = 5 * time.Minute
)

// registeredClaims are set by the Keyring alone; Claims may not name them
// and MintRequest.Claims cannot override them.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}

// Config configures a Keyring. Durations map from the YAML sections
// internal_token and keys.
type Config struct {
	// Issuer is the "iss" of every internal token and of the discovery
	// document. Required.
	Issuer string
	// TTL is the lifetime of an internal token, in whole seconds, at
	// least 1s. Default 60s.
	TTL time.Duration
	// Algorithm signs new keys: ES256 (default), RS256 or EdDSA. Existing
	// keys keep the algorithm they were created with.
	Algorithm Algorithm
	// RSABits is the size of new RS256 keys, 2048 to 8192. Default 2048.
	RSABits int
	// Claims are the identity claims copied from MintRequest.Claims into
	// the token, in this order. Registered claim names are refused.
	Claims []string
	// RotationPeriod is how long a key signs before the next one takes
	// over. Default 720h. Must be at least PublishAhead.
	RotationPeriod time.Duration
	// GracePeriod is how long a retired key stays published. Must be at
	// least 2×TTL (and should also cover the replicas' propagation
	// delay, see PollInterval). Default 2h.
	GracePeriod time.Duration
	// PublishAhead is how long a next key is published before it signs.
	// Must be greater than 0 and at least MaxAge, so a verifier that
	// honours Cache-Control holds the key before the first token signed
	// by it arrives. With a shared store, make it at least MaxAge plus
	// PollInterval. Default 10m.
	PublishAhead time.Duration
	// MaxAge is the Cache-Control max-age of the published documents, in
	// whole seconds, at most PublishAhead. Default 5m, or PublishAhead/2
	// when that is shorter (rounded down to whole seconds, at least 1s).
	MaxAge time.Duration
	// BaseURL is the public URL under which the Publisher is reachable;
	// jwks_uri in the discovery document is BaseURL +
	// "/.well-known/jwks.json". Default Issuer.
	BaseURL string
	// PollInterval is how often the store is re-read, as a fallback to
	// the store's notifications (redis) and to see changes made by the
	// CLI. Default 5s.
	PollInterval time.Duration
	// MintCacheEntries bounds the minted-token reuse cache. Default
	// 10000; negative disables reuse.
	MintCacheEntries int
}

func (c Config) withDefaults() Config {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Algorithm == "" {
		c.Algorithm = DefaultAlgorithm
	}
	if c.Algorithm == RS256 && c.RSABits == 0 {
		c.RSABits = DefaultRSABits
	}
	if c.RotationPeriod == 0 {
		c.RotationPeriod = DefaultRotationPeriod
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.PublishAhead == 0 {
		c.PublishAhead = DefaultPublishAhead
	}
	if c.MaxAge == 0 && c.PublishAhead > 0 {
		c.MaxAge = min(DefaultMaxAge, (c.PublishAhead / 2).Truncate(time.Second))
		if c.MaxAge < time.Second {
			c.MaxAge = time.Second
		}
	}
	if c.BaseURL == "" {
		c.BaseURL = c.Issuer
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MintCacheEntries == 0 {
		c.MintCacheEntries = DefaultMintCacheEntries
	}
	return c
}

// Validate reports every problem of c (after defaults), each prefixed with
// its field name, joined with errors.Join.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Issuer == "" {
		bad("issuer", "required")
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		bad("ttl", "must be a whole number of seconds, at least 1s (got %v)", c.TTL)
	}
	if !c.Algorithm.valid() {
		bad("algorithm", "must be ES256, RS256 or EdDSA (got %q)", c.Algorithm)
	}
	if c.Algorithm == RS256 && (c.RSABits < MinRSABits || c.RSABits > MaxRSABits) {
		bad("rsa_bits", "must be %d to %d (got %d)", MinRSABits, MaxRSABits, c.RSABits)
	}
	for i, name := range c.Claims {
		switch {
		case name == "":
			bad(fmt.Sprintf("claims[%d]", i), "empty claim name")
		case slices.Contains(registeredClaims, name):
			bad(fmt.Sprintf("claims[%d]", i), "%q is a registered claim set by the issuer itself", name)
		case slices.Index(c.Claims, name) != i:
			bad(fmt.Sprintf("claims[%d]", i), "duplicate claim %q", name)
		}
	}
	if c.PublishAhead <= 0 {
		bad("publish_ahead", "must be greater than 0")
	}
	if c.RotationPeriod < c.PublishAhead {
		bad("rotation_period", "must be at least publish_ahead (%v), got %v", c.PublishAhead, c.RotationPeriod)
	}
	if c.GracePeriod < 2*c.TTL {
		bad("grace_period", "must be at least 2 × ttl (%v), got %v", 2*c.TTL, c.GracePeriod)
	}
	if c.MaxAge < 0 || c.MaxAge%time.Second != 0 {
		bad("max_age", "must be a whole number of seconds (got %v)", c.MaxAge)
	}
	if c.PublishAhead > 0 && c.MaxAge > c.PublishAhead {
		bad("max_age", "must be at most publish_ahead (%v), got %v", c.PublishAhead, c.MaxAge)
	}
	if c.BaseURL != "" {
		if u, err := url.Parse(c.BaseURL); err != nil || u.Scheme == "" || u.Host == "" {
			bad("base_url", "must be an absolute URL")
		}
	}
	if c.PollInterval < 0 {
		bad("poll_interval", "must not be negative")
	}
	return errors.Join(errs...)
}

// Option configures optional dependencies of a Keyring.
type Option func(*options)

type options struct {
	now      func() time.Time
	logger   *slog.Logger
	registry prometheus.Registerer
}

// WithClock sets the time source for token times and the key schedule.
// Timers still run in real time; a clock that jumps is noticed at the next
// poll. Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the Keyring's metrics with r. Default: no
// metrics are registered anywhere.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registry = r }
}
