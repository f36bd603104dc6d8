package session

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Defaults applied to zero-valued Config fields.
const (
	DefaultCookie           = "tollgate_session"
	DefaultHeader           = "x-session-id"
	DefaultIdleTimeout      = 30 * time.Minute
	DefaultAbsoluteTimeout  = 12 * time.Hour
	DefaultRedisTimeout     = 50 * time.Millisecond
	DefaultKeyPrefix        = "tollgate:"
	DefaultCacheMaxEntries  = 10000
	DefaultCacheTTL         = time.Second
	DefaultBreakerThreshold = 5
	DefaultBreakerCooldown  = time.Second

	// MaxIdleRefreshInterval caps the default idle refresh interval.
	MaxIdleRefreshInterval = time.Minute
	// MaxCacheTTL is the largest Cache.TTL accepted: it bounds how long a
	// replica can serve a revoked session if an invalidation is lost.
	MaxCacheTTL = time.Second
)

// StoreKind selects the store implementation.
type StoreKind string

// Store kinds.
const (
	StoreMemory StoreKind = "memory"
	StoreRedis  StoreKind = "redis"
)

// StoreErrorMode says what the Check pipeline does when the store fails.
// The store itself does not use it; it travels with the config.
type StoreErrorMode string

// Store error modes.
const (
	// OnErrorDeny answers 503 (reason.SessionStoreUnavailable).
	OnErrorDeny StoreErrorMode = "deny"
	// OnErrorAnonymous continues as if no session was presented.
	OnErrorAnonymous StoreErrorMode = "anonymous"
)

// Config configures a store. It mirrors the "sessions" YAML section.
type Config struct {
	// Store is memory or redis. Default memory. NewMemory and NewRedis
	// ignore it; New dispatches on it.
	Store StoreKind
	// Redis configures RedisStore.
	Redis RedisConfig
	// Cookie is the session cookie name. Default "tollgate_session".
	Cookie string
	// Header is the lowercase request header carrying a session ID for
	// non-browser clients. Default "x-session-id".
	Header string
	// IdleTimeout ends a session not used for this long (sliding).
	// Default 30m.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends every session this long after creation,
	// however active. Default 12h. Must be >= IdleTimeout.
	AbsoluteTimeout time.Duration
	// IdleRefreshInterval is the minimum time between two writes that
	// slide one session's idle expiry. Default IdleTimeout/10, at most 1m.
	// Must be at most IdleTimeout/2.
	IdleRefreshInterval time.Duration
	// MaxPerSubject evicts a subject's oldest sessions beyond this many
	// when a session is created. Default 0: unlimited.
	MaxPerSubject int
	// OnStoreError is deny or anonymous. Default deny.
	OnStoreError StoreErrorMode
	// Cache configures RedisStore's local lookup cache.
	Cache CacheConfig
	// Breaker configures RedisStore's circuit breaker.
	Breaker BreakerConfig
}

// RedisConfig configures the Redis connection.
type RedisConfig struct {
	// Addrs: one address is a single node, several are cluster seeds;
	// with MasterName they are sentinel addresses. Required for NewRedis
	// unless WithRedisClient is given.
	Addrs []string
	// MasterName selects sentinel mode. Default "".
	MasterName string
	// Username for ACL authentication. Default "".
	Username string
	// PasswordFile holds the password (surrounding whitespace trimmed),
	// read once by NewRedis. Default "": no password.
	PasswordFile string
	// DB is the database number; must be 0 in cluster mode. Default 0.
	DB int
	// TLS configures TLS to Redis.
	TLS TLSConfig
	// Timeout bounds every Redis call; keep it well below Envoy's
	// ext_authz timeout. Default 50ms.
	Timeout time.Duration
	// KeyPrefix is prepended to every key and to the channel name.
	// Default "tollgate:".
	KeyPrefix string
}

// TLSConfig configures TLS to Redis.
type TLSConfig struct {
	// Enabled turns TLS on (minimum TLS 1.2). Default false.
	Enabled bool
	// CAFile is a PEM bundle of roots; default: the system roots.
	CAFile string
}

// CacheConfig configures RedisStore's local lookup cache.
type CacheConfig struct {
	// Enabled turns the cache on. Default false. It works only after
	// Start (which subscribes to invalidations).
	Enabled bool
	// MaxEntries bounds the cache. Default 10000.
	MaxEntries int
	// TTL is how long a lookup is served from memory. Default 1s, at most
	// 1s.
	TTL time.Duration
}

// BreakerConfig configures RedisStore's circuit breaker.
type BreakerConfig struct {
	// Threshold is the number of consecutive failed Redis calls that
	// opens the breaker. Default 5.
	Threshold int
	// Cooldown is how long the open breaker fails calls immediately
	// before letting one probe through. Default 1s.
	Cooldown time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Store == "" {
		c.Store = StoreMemory
	}
	if c.Cookie == "" {
		c.Cookie = DefaultCookie
	}
	if c.Header == "" {
		c.Header = DefaultHeader
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.AbsoluteTimeout == 0 {
		c.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if c.IdleRefreshInterval == 0 && c.IdleTimeout > 0 {
		c.IdleRefreshInterval = min(c.IdleTimeout/10, MaxIdleRefreshInterval)
		if c.IdleRefreshInterval < time.Millisecond {
			c.IdleRefreshInterval = time.Millisecond
		}
	}
	if c.OnStoreError == "" {
		c.OnStoreError = OnErrorDeny
	}
	if c.Redis.Timeout == 0 {
		c.Redis.Timeout = DefaultRedisTimeout
	}
	if c.Redis.KeyPrefix == "" {
		c.Redis.KeyPrefix = DefaultKeyPrefix
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = DefaultCacheMaxEntries
	}
	if c.Cache.TTL == 0 {
		c.Cache.TTL = DefaultCacheTTL
	}
	if c.Breaker.Threshold == 0 {
		c.Breaker.Threshold = DefaultBreakerThreshold
	}
	if c.Breaker.Cooldown == 0 {
		c.Breaker.Cooldown = DefaultBreakerCooldown
	}
	return c
}

// Validate reports every problem of the effective config (c with defaults
// applied), each prefixed with its YAML key, joined with errors.Join.
func (c Config) Validate() error {
	return c.validate(c.withDefaults().Store == StoreRedis)
}

// validate is Validate; requireAddrs demands redis.addrs.
func (c Config) validate(requireAddrs bool) error {
	c = c.withDefaults()
	var errs []error
	bad := func(path, msg string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(msg, args...)))
	}
	switch c.Store {
	case StoreMemory, StoreRedis:
	default:
		bad("store", "must be memory or redis")
	}
	if !isToken(c.Cookie) {
		bad("cookie", "must be a cookie name (RFC 6265 token)")
	}
	if !isToken(c.Header) || strings.ToLower(c.Header) != c.Header {
		bad("header", "must be a lowercase header name")
	}
	if c.IdleTimeout < time.Millisecond {
		bad("idle_timeout", "must be at least 1ms")
	}
	if c.AbsoluteTimeout < c.IdleTimeout {
		bad("absolute_timeout", "must be at least idle_timeout")
	}
	if c.IdleRefreshInterval < time.Millisecond || c.IdleRefreshInterval > c.IdleTimeout/2 {
		bad("idle_refresh_interval", "must be between 1ms and idle_timeout/2")
	}
	if c.MaxPerSubject < 0 {
		bad("max_per_subject", "must be 0 (unlimited) or positive")
	}
	switch c.OnStoreError {
	case OnErrorDeny, OnErrorAnonymous:
	default:
		bad("on_store_error", "must be deny or anonymous")
	}
	if requireAddrs && len(c.Redis.Addrs) == 0 {
		bad("redis.addrs", "at least one address is required")
	}
	for i, a := range c.Redis.Addrs {
		if a == "" || !strings.Contains(a, ":") {
			bad(fmt.Sprintf("redis.addrs[%d]", i), "must be host:port")
		}
	}
	if c.Redis.DB < 0 {
		bad("redis.db", "must not be negative")
	}
	if c.Redis.DB != 0 && len(c.Redis.Addrs) > 1 && c.Redis.MasterName == "" {
		bad("redis.db", "must be 0 in cluster mode")
	}
	if c.Redis.Timeout <= 0 {
		bad("redis.timeout", "must be positive")
	}
	if c.Redis.TLS.CAFile != "" && !c.Redis.TLS.Enabled {
		bad("redis.tls.ca_file", "set but tls.enabled is false")
	}
	if strings.ContainsAny(c.Redis.KeyPrefix, " \r\n\x00") {
		bad("redis.key_prefix", "must not contain whitespace or NUL")
	}
	if c.Cache.MaxEntries < 0 {
		bad("cache.max_entries", "must be positive")
	}
	if c.Cache.TTL < 0 || c.Cache.TTL > MaxCacheTTL {
		bad("cache.ttl", "must be between 0 and %s", MaxCacheTTL)
	}
	if c.Breaker.Threshold < 1 {
		bad("breaker.threshold", "must be positive")
	}
	if c.Breaker.Cooldown < 0 {
		bad("breaker.cooldown", "must be positive")
	}
	return errors.Join(errs...)
}

// isToken reports whether s is a non-empty RFC 7230 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Option configures optional dependencies of a store or of the admin
// handler.
type Option func(*options)

type options struct {
	now      func() time.Time
	logger   *slog.Logger
	registry prometheus.Registerer
	client   redis.UniversalClient

	// Not exported; tests shorten them.
	expiredGrace time.Duration
	pingEvery    time.Duration
}

// WithClock sets the time source for session timestamps and expiry.
// Default time.Now. RedisStore sets Redis TTLs relative to this clock, so
// it tolerates skew between Tollgate and Redis.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the store's metrics with r. Default: no metrics
// are registered anywhere. Ignored by NewAdminHandler.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registry = r }
}

// WithRedisClient makes RedisStore use c instead of building a client from
// Config.Redis. The store never closes c. Enable ContextTimeoutEnabled on
// it so the per-call deadline (Config.Redis.Timeout) bounds socket I/O.
// Default: a client built from Config.Redis. Ignored by NewMemory.
func WithRedisClient(c redis.UniversalClient) Option {
	return func(o *options) { o.client = c }
}

// withExpiredGrace overrides expiredGrace (tests).
func withExpiredGrace(d time.Duration) Option { return func(o *options) { o.expiredGrace = d } }

// withPingEvery overrides the pub/sub health-check interval (tests).
func withPingEvery(d time.Duration) Option { return func(o *options) { o.pingEvery = d } }

const (
	// expiredGrace is how long an expired record is kept so lookups say
	// "expired" rather than "not found".
	expiredGrace = time.Minute
	// defaultPingEvery is the pub/sub health-check interval.
	defaultPingEvery = time.Second
)

func buildOptions(opts []Option) options {
	o := options{now: time.Now, expiredGrace: expiredGrace, pingEvery: defaultPingEvery}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.expiredGrace < 0 {
		o.expiredGrace = 0
	}
	if o.pingEvery <= 0 {
		o.pingEvery = defaultPingEvery
	}
	return o
}
