package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Policy configures the embedded OPA engine. An empty Paths and no Bundle
// means no policy: authentication alone decides.
type Policy struct {
	// Paths are .rego files, data documents, or directories of them.
	Paths []string `yaml:"paths"`
	// Query is the default decision. Default data.tollgate.authz.allow;
	// "data.envoy.authz.allow" serves OPA-Envoy policies unchanged.
	Query string `yaml:"query"`
	// Timeout bounds one evaluation. Default 50ms.
	Timeout Duration `yaml:"timeout"`
	// RegoVersion is v1 (default) or v0.
	RegoVersion string `yaml:"rego_version"`
	// ExposeCredentials passes the authorization header and session cookie
	// to policies unredacted. Default false.
	ExposeCredentials bool `yaml:"expose_credentials"`
	// TestOnReload runs the policies' own Rego tests before a reload is
	// swapped in. Default false.
	TestOnReload bool        `yaml:"test_on_reload"`
	DecisionLog  DecisionLog `yaml:"decision_log"`
	Bundle       *Bundle     `yaml:"bundle"`
	// DecisionCache caches the decisions of queries that read only
	// constant input paths and call only pure builtins.
	DecisionCache DecisionCache `yaml:"decision_cache"`
}

// DecisionCache configures the policy decision cache.
type DecisionCache struct {
	// Enabled defaults to true; the cache is only used for queries whose
	// decisions it can key exactly (see policy.DecisionCacheConfig).
	Enabled *bool `yaml:"enabled"`
	// MaxEntries bounds the cached decisions per query. Default 10000.
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes bounds the memory they hold per query. Default 16 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Enabled reports whether a policy is configured.
func (p Policy) Enabled() bool { return len(p.Paths) > 0 || p.Bundle != nil }

// DecisionLog writes one JSON line per decision.
type DecisionLog struct {
	Enabled bool `yaml:"enabled"`
	// Path is a file, or "-" for stdout. Default "-".
	Path string `yaml:"path"`
}

// Bundle downloads OPA bundles over HTTP with ETag polling.
type Bundle struct {
	URL          string   `yaml:"url"`
	PollInterval Duration `yaml:"poll_interval"` // default 30s
	// VerificationKeyFile is a PEM public key; when set, bundles must be
	// signed by it.
	VerificationKeyFile string `yaml:"verification_key_file"`
	KeyID               string `yaml:"key_id"`
	// Algorithm of the bundle signature. Default RS256.
	Algorithm string `yaml:"algorithm"`
	Scope     string `yaml:"scope"`
}

// InternalToken configures the JWT Tollgate mints for the destination.
// Disabled when Header is empty.
type InternalToken struct {
	Enabled bool `yaml:"enabled"`
	// Header carries the token upstream. Default x-internal-jwt.
	Header string `yaml:"header"`
	// Issuer is the iss of minted tokens. Default https://tollgate.internal.
	Issuer string `yaml:"issuer"`
	// TTL of a minted token. Default 60s.
	TTL Duration `yaml:"ttl"`
	// Algorithm is ES256 (default), RS256 or EdDSA.
	Algorithm string `yaml:"algorithm"`
	// Claims are identity claims copied into the token.
	Claims []string `yaml:"claims"`
	// ForJWT also mints when the caller presented an external JWT.
	// Default true.
	ForJWT *bool `yaml:"for_jwt"`
	// PublicURL is the base URL services use to reach Tollgate's JWKS
	// (for openid-configuration). Default http://<server.http_address>.
	PublicURL string `yaml:"public_url"`
}

// Keys configures Tollgate's own signing keys.
type Keys struct {
	// Store is file (default), redis or pkcs11.
	Store          string   `yaml:"store"`
	Dir            string   `yaml:"dir"` // file store; default ./keys
	RotationPeriod Duration `yaml:"rotation_period"`
	GracePeriod    Duration `yaml:"grace_period"`
	PublishAhead   Duration `yaml:"publish_ahead"`
	// PollInterval is how often a running server re-reads the store, so
	// a rotation or revocation made with `tollgate keys` (or by another
	// replica, as a fallback to Redis pub/sub) takes effect. Default 5s.
	PollInterval Duration  `yaml:"poll_interval"`
	Redis        KeysRedis `yaml:"redis"`
	PKCS11       PKCS11    `yaml:"pkcs11"`
}

// KeysRedis is the shared key store; private keys are sealed with a KEK.
type KeysRedis struct {
	Redis   `yaml:",inline"`
	KEKFile string `yaml:"kek_file"`
	KEKEnv  string `yaml:"kek_env"`
}

// PKCS11 selects an HSM token.
type PKCS11 struct {
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	PINFile    string `yaml:"pin_file"`
	// StateFile keeps key states and times beside the token (the key
	// material stays inside it).
	StateFile string `yaml:"state_file"`
}

// Redis is a go-redis UniversalClient: one address is a single node,
// several a cluster, and master_name selects Sentinel.
type Redis struct {
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"`
	TLS          TLS      `yaml:"tls"`
	// Timeout bounds every call; keep it below Envoy's ext_authz timeout.
	// Default 50ms.
	Timeout Duration `yaml:"timeout"`
}

// TLS for a client connection.
type TLS struct {
	Enabled bool   `yaml:"enabled"`
	CAFile  string `yaml:"ca_file"`
}

// Sessions configures opaque session IDs.
type Sessions struct {
	// Store is memory or redis; empty disables sessions.
	Store string `yaml:"store"`
	Redis Redis  `yaml:"redis"`
	// Cookie and Header name where the session ID is read.
	Cookie          string   `yaml:"cookie"`
	Header          string   `yaml:"header"`
	IdleTimeout     Duration `yaml:"idle_timeout"`
	AbsoluteTimeout Duration `yaml:"absolute_timeout"`
	MaxPerSubject   int      `yaml:"max_per_subject"`
	// OnStoreError is deny (503, default) or anonymous.
	OnStoreError string `yaml:"on_store_error"`
	// LocalCache keeps lookups for at most LocalCacheTTL; revocations
	// reach every replica over pub/sub. Default off.
	LocalCache    bool     `yaml:"local_cache"`
	LocalCacheTTL Duration `yaml:"local_cache_ttl"`
	// Precedence says which credential wins when both a session and a
	// bearer JWT are present: session (default) or jwt.
	Precedence string `yaml:"precedence"`
}

// Enabled reports whether sessions are configured.
func (s Sessions) Enabled() bool { return s.Store != "" }

// Admin configures the admin API (sessions).
type Admin struct {
	// TokenFile holds the bearer token callers present. Without it the
	// admin listener does not start.
	TokenFile string `yaml:"token_file"`
}

func (c *Config) fillSections() {
	p := &c.Policy
	if p.Query == "" {
		p.Query = "data.tollgate.authz.allow"
	}
	if p.Timeout == 0 {
		p.Timeout = Duration(50 * time.Millisecond)
	}
	if p.RegoVersion == "" {
		p.RegoVersion = "v1"
	}
	if p.DecisionLog.Path == "" {
		p.DecisionLog.Path = "-"
	}
	if p.DecisionCache.Enabled == nil {
		t := true
		p.DecisionCache.Enabled = &t
	}
	if p.DecisionCache.MaxEntries == 0 {
		p.DecisionCache.MaxEntries = 10_000
	}
	if p.DecisionCache.MaxBytes == 0 {
		p.DecisionCache.MaxBytes = 16 << 20
	}
	if p.Bundle != nil && p.Bundle.PollInterval == 0 {
		p.Bundle.PollInterval = Duration(30 * time.Second)
	}
	it := &c.InternalToken
	if it.Header == "" {
		it.Header = "x-internal-jwt"
	}
	if it.Issuer == "" {
		it.Issuer = "https://tollgate.internal"
	}
	if it.TTL == 0 {
		it.TTL = Duration(60 * time.Second)
	}
	if it.Algorithm == "" {
		it.Algorithm = "ES256"
	}
	if it.ForJWT == nil {
		t := true
		it.ForJWT = &t
	}
	k := &c.Keys
	if k.Store == "" {
		k.Store = "file"
	}
	if k.Dir == "" {
		k.Dir = "keys"
	}
	if k.RotationPeriod == 0 {
		k.RotationPeriod = Duration(720 * time.Hour)
	}
	if k.GracePeriod == 0 {
		k.GracePeriod = Duration(2 * time.Hour)
	}
	if k.PublishAhead == 0 {
		k.PublishAhead = Duration(10 * time.Minute)
	}
	if k.PollInterval == 0 {
		k.PollInterval = Duration(5 * time.Second)
	}
	if k.Redis.Timeout == 0 {
		k.Redis.Timeout = Duration(time.Second)
	}
	s := &c.Sessions
	if s.Cookie == "" {
		s.Cookie = "tollgate_session"
	}
	if s.Header == "" {
		s.Header = "x-session-id"
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = Duration(30 * time.Minute)
	}
	if s.AbsoluteTimeout == 0 {
		s.AbsoluteTimeout = Duration(12 * time.Hour)
	}
	if s.OnStoreError == "" {
		s.OnStoreError = "deny"
	}
	if s.Redis.Timeout == 0 {
		s.Redis.Timeout = Duration(50 * time.Millisecond)
	}
	if s.LocalCacheTTL == 0 {
		s.LocalCacheTTL = Duration(time.Second)
	}
	if s.Precedence == "" {
		s.Precedence = "session"
	}
}

func (c *Config) validateSections(p *problems) {
	pol := c.Policy
	if pol.Enabled() {
		if !strings.HasPrefix(pol.Query, "data.") {
			p.add("policy.query", "must be a data reference such as data.tollgate.authz.allow; got %q", pol.Query)
		}
		if pol.Timeout <= 0 {
			p.add("policy.timeout", "must be positive")
		}
		if pol.RegoVersion != "v0" && pol.RegoVersion != "v1" {
			p.add("policy.rego_version", "must be v0 or v1; got %q", pol.RegoVersion)
		}
		if pol.DecisionCache.MaxEntries < 0 {
			p.add("policy.decision_cache.max_entries", "must not be negative; got %d", pol.DecisionCache.MaxEntries)
		}
		if pol.DecisionCache.MaxBytes < 0 {
			p.add("policy.decision_cache.max_bytes", "must not be negative; got %d", pol.DecisionCache.MaxBytes)
		}
		if b := pol.Bundle; b != nil {
			checkFetchURL("policy.bundle.url", b.URL, false, p)
			if b.PollInterval < Duration(time.Second) {
				p.add("policy.bundle.poll_interval", "must be at least 1s")
			}
		}
	}
	for i, s := range c.Services {
		if s.PolicyQuery != "" {
			if !pol.Enabled() {
				p.add(fmt.Sprintf("services[%d].policy_query", i), "set, but there is no policy section")
			} else if !strings.HasPrefix(s.PolicyQuery, "data.") {
				p.add(fmt.Sprintf("services[%d].policy_query", i), "must be a data reference; got %q", s.PolicyQuery)
			}
		}
		if s.InternalAudience == "*" {
			p.add(fmt.Sprintf("services[%d].internal_audience", i), "must be one concrete audience, not \"*\"")
		}
	}
	it := c.InternalToken
	if it.Enabled {
		if !validHeaderName(it.Header) {
			p.add("internal_token.header", "must be a lower-case HTTP header name; got %q", it.Header)
		}
		if it.TTL < Duration(time.Second) || it.TTL > Duration(24*time.Hour) {
			p.add("internal_token.ttl", "must be between 1s and 24h")
		}
		if !slices.Contains([]string{"ES256", "RS256", "EdDSA"}, it.Algorithm) {
			p.add("internal_token.algorithm", "must be ES256, RS256 or EdDSA; got %q", it.Algorithm)
		}
		for i, cl := range it.Claims {
			if slices.Contains([]string{"iss", "aud", "sub", "iat", "nbf", "exp", "jti"}, cl) {
				p.add(fmt.Sprintf("internal_token.claims[%d]", i), "%q is set by Tollgate itself", cl)
			}
		}
		k := c.Keys
		switch k.Store {
		case "file":
			if k.Dir == "" {
				p.add("keys.dir", "required for the file store")
			}
		case "redis":
			if len(k.Redis.Addrs) == 0 {
				p.add("keys.redis.addrs", "required for the redis store")
			}
			if k.Redis.KEKFile == "" && k.Redis.KEKEnv == "" {
				p.add("keys.redis", "kek_file or kek_env is required: private keys are encrypted at rest")
			}
		case "pkcs11":
			if k.PKCS11.Module == "" {
				p.add("keys.pkcs11.module", "required for the pkcs11 store")
			}
			if k.PKCS11.TokenLabel == "" {
				p.add("keys.pkcs11.token_label", "required for the pkcs11 store")
			}
			if k.PKCS11.PINFile == "" {
				p.add("keys.pkcs11.pin_file", "required for the pkcs11 store")
			}
			if k.PKCS11.StateFile == "" {
				p.add("keys.pkcs11.state_file", "required for the pkcs11 store")
			}
			if it.Algorithm == "EdDSA" {
				p.add("internal_token.algorithm", "EdDSA is not available with the pkcs11 store; use ES256 or RS256")
			}
		default:
			p.add("keys.store", "must be file, redis or pkcs11; got %q", k.Store)
		}
		if k.GracePeriod < 2*it.TTL {
			p.add("keys.grace_period", "must be ≥ 2 × internal_token.ttl (%v); got %v", 2*it.TTL.D(), k.GracePeriod.D())
		}
		if k.PublishAhead <= 0 {
			p.add("keys.publish_ahead", "must be positive")
		}
		if k.PollInterval < Duration(100*time.Millisecond) {
			p.add("keys.poll_interval", "must be at least 100ms")
		}
		if k.RotationPeriod <= k.PublishAhead {
			p.add("keys.rotation_period", "must be longer than keys.publish_ahead")
		}
	}
	s := c.Sessions
	if s.Enabled() {
		switch s.Store {
		case "memory":
		case "redis":
			if len(s.Redis.Addrs) == 0 {
				p.add("sessions.redis.addrs", "required for the redis store")
			}
		default:
			p.add("sessions.store", "must be memory or redis; got %q", s.Store)
		}
		if s.Redis.Timeout <= 0 {
			p.add("sessions.redis.timeout", "must be positive")
		}
		if !validHeaderName(s.Header) {
			p.add("sessions.header", "must be a lower-case HTTP header name; got %q", s.Header)
		}
		if s.Cookie == "" || strings.ContainsAny(s.Cookie, "=; \t") {
			p.add("sessions.cookie", "must be a cookie name; got %q", s.Cookie)
		}
		if s.IdleTimeout <= 0 || s.AbsoluteTimeout < s.IdleTimeout {
			p.add("sessions.absolute_timeout", "must be ≥ idle_timeout and both positive")
		}
		if s.MaxPerSubject < 0 {
			p.add("sessions.max_per_subject", "must not be negative")
		}
		if s.OnStoreError != "deny" && s.OnStoreError != "anonymous" {
			p.add("sessions.on_store_error", "must be deny or anonymous; got %q", s.OnStoreError)
		}
		if s.Precedence != "session" && s.Precedence != "jwt" {
			p.add("sessions.precedence", "must be session or jwt; got %q", s.Precedence)
		}
		if s.LocalCacheTTL <= 0 || s.LocalCacheTTL > Duration(time.Second) {
			p.add("sessions.local_cache_ttl", "must be between 0 and 1s: revocation must reach every replica within 1s")
		}
		if !c.InternalToken.Enabled {
			p.add("internal_token.enabled", "must be true when sessions are enabled: services behind Tollgate receive a minted JWT, never the session ID")
		}
	}
}
