package jwks

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero-valued fields.
const (
	DefaultMaxTokenBytes             = 16384
	DefaultCacheMaxEntries           = 100000
	DefaultCacheMaxBytes             = 64 << 20
	DefaultMinRefresh                = time.Minute
	DefaultMaxRefresh                = time.Hour
	DefaultUnknownKeyRefreshInterval = 10 * time.Second
	DefaultFetchTimeout              = 5 * time.Second
)

// IssuerConfig describes one trusted token issuer.
type IssuerConfig struct {
	// Issuer must equal the token's "iss" claim exactly.
	Issuer string
	// JWKSURI is the key set location. Empty when Discovery is true, and
	// when Algorithms holds only HMAC algorithms.
	JWKSURI string
	// Discovery fetches Issuer + "/.well-known/openid-configuration" and
	// uses its jwks_uri. The document's "issuer" must equal Issuer.
	Discovery bool
	// Algorithms is the allowlist of JWS "alg" values: ES256, ES384,
	// ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA, HS256, HS384,
	// HS512. "none" is never accepted. Required.
	Algorithms []string
	// Leeway is the clock skew tolerated for exp, nbf and iat. Default 0.
	Leeway time.Duration
	// InsecureHTTP allows http:// URLs for hosts other than loopback
	// (127.0.0.0/8, ::1, localhost). Default false.
	InsecureHTTP bool
	// HMACSecret verifies HS* tokens of this issuer. Required, and at
	// least as long as the hash output, when Algorithms holds an HS*
	// algorithm. Never used for anything else.
	HMACSecret []byte
	// MinRefresh is the lower clamp of the key set's Cache-Control
	// max-age. Default 1m.
	MinRefresh time.Duration
	// MaxRefresh is the upper clamp of the key set's Cache-Control
	// max-age. Default 1h.
	MaxRefresh time.Duration
	// UnknownKeyRefreshInterval is the minimum time between refreshes
	// triggered by a token whose kid is not in the key set. Default 10s.
	UnknownKeyRefreshInterval time.Duration
	// FetchTimeout bounds each HTTP fetch (discovery or key set).
	// Default 5s.
	FetchTimeout time.Duration
}

// Config configures a Verifier.
type Config struct {
	// Issuers are the trusted issuers. At least one is required.
	Issuers []IssuerConfig
	// MaxTokenBytes rejects larger tokens before any parsing.
	// Default 16384.
	MaxTokenBytes int
	// CacheMaxEntries bounds the verified-token cache. Default 100000.
	CacheMaxEntries int
	// CacheMaxBytes bounds the approximate memory of cached claims.
	// Default 64 MiB.
	CacheMaxBytes int64
}

// Option configures optional dependencies of a Verifier.
type Option func(*options)

type options struct {
	client   *http.Client
	now      func() time.Time
	logger   *slog.Logger
	registry prometheus.Registerer

	// Backoff after a failed fetch starts at backoffBase and doubles up
	// to backoffMax (further capped by the issuer's MinRefresh). Not
	// exported; tests shorten them.
	backoffBase time.Duration
	backoffMax  time.Duration
}

// WithHTTPClient sets the client used for discovery and key set fetches.
// Default: a dedicated client that follows at most 5 redirects, never to a
// different scheme, with dial and TLS handshake timeouts. Whatever the
// client, the final URL of every response must still satisfy the issuer's
// http/https policy.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithClock sets the time source for token validation (exp, nbf, iat and
// cached expiry), the key set age and the unknown-kid refresh rate limit.
// Refresh scheduling uses real timers regardless. Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the package's metrics with r. Default: no
// metrics are registered anywhere.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registry = r }
}

func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = 10 * time.Second
	tr.MaxIdleConnsPerHost = 2
	tr.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second, // backstop; each fetch also has FetchTimeout
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			if req.URL.Scheme != via[0].URL.Scheme {
				return fmt.Errorf("redirect from %s to %s refused", via[0].URL.Scheme, req.URL.Scheme)
			}
			return nil
		},
	}
}

// withDefaults validates c and fills its defaults. The error joins every
// problem found, each tagged with its path.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.MaxTokenBytes < 0 {
		errs = append(errs, errors.New("max_token_bytes: must not be negative"))
	}
	if c.MaxTokenBytes == 0 {
		c.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if c.CacheMaxEntries < 0 {
		errs = append(errs, errors.New("cache_max_entries: must not be negative"))
	}
	if c.CacheMaxEntries == 0 {
		c.CacheMaxEntries = DefaultCacheMaxEntries
	}
	if c.CacheMaxBytes < 0 {
		errs = append(errs, errors.New("cache_max_bytes: must not be negative"))
	}
	if c.CacheMaxBytes == 0 {
		c.CacheMaxBytes = DefaultCacheMaxBytes
	}
	if len(c.Issuers) == 0 {
		errs = append(errs, errors.New("issuers: at least one issuer is required"))
	}
	seen := make(map[string]int, len(c.Issuers))
	issuers := make([]IssuerConfig, len(c.Issuers))
	for i, ic := range c.Issuers {
		ic, icErrs := ic.withDefaults()
		for _, err := range icErrs {
			errs = append(errs, fmt.Errorf("issuers[%d] (%q): %w", i, ic.Issuer, err))
		}
		if j, dup := seen[ic.Issuer]; dup && ic.Issuer != "" {
			errs = append(errs, fmt.Errorf("issuers[%d] (%q): duplicate of issuers[%d]", i, ic.Issuer, j))
		}
		seen[ic.Issuer] = i
		issuers[i] = ic
	}
	c.Issuers = issuers
	return c, errors.Join(errs...)
}

// withDefaults validates ic and fills its defaults. It returns every
// problem, each prefixed with the field it concerns.
func (ic IssuerConfig) withDefaults() (IssuerConfig, []error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf(field+": "+format, args...))
	}
	switch {
	case ic.Issuer == "":
		bad("issuer", "must not be empty")
	case !utf8.ValidString(ic.Issuer):
		bad("issuer", "must be valid UTF-8")
	}
	ic.Algorithms = slices.Clone(ic.Algorithms)
	algs, algErrs := parseAlgList(ic.Algorithms)
	errs = append(errs, algErrs...)
	for a := alg(1); a < numAlgs; a++ {
		if a.isHMAC() && algs.has(a) && len(ic.HMACSecret) < a.minHMACSecret() {
			if len(ic.HMACSecret) == 0 {
				bad("hmac_secret", "required for %s", a)
			} else {
				bad("hmac_secret", "must be at least %d bytes for %s", a.minHMACSecret(), a)
			}
		}
	}
	switch {
	case ic.Discovery && ic.JWKSURI != "":
		bad("jwks_uri", "must be empty when discovery is enabled")
	case algs.hasAsymmetric() && !ic.Discovery && ic.JWKSURI == "":
		bad("jwks_uri", "required (or enable discovery) for public-key algorithms")
	case !algs.empty() && !algs.hasAsymmetric() && (ic.Discovery || ic.JWKSURI != ""):
		bad("jwks_uri", "set, but algorithms allow only HMAC")
	}
	if ic.JWKSURI != "" {
		if err := checkURL(ic.JWKSURI, ic.InsecureHTTP); err != nil {
			bad("jwks_uri", "%v", err)
		}
	}
	if ic.Discovery && ic.Issuer != "" {
		if err := checkURL(ic.Issuer, ic.InsecureHTTP); err != nil {
			bad("issuer", "discovery needs a fetchable issuer URL: %v", err)
		}
	}
	if ic.Leeway < 0 {
		bad("leeway", "must not be negative")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"min_refresh", &ic.MinRefresh, DefaultMinRefresh},
		{"max_refresh", &ic.MaxRefresh, DefaultMaxRefresh},
		{"unknown_key_refresh_interval", &ic.UnknownKeyRefreshInterval, DefaultUnknownKeyRefreshInterval},
		{"fetch_timeout", &ic.FetchTimeout, DefaultFetchTimeout},
	} {
		if *d.v < 0 {
			bad(d.name, "must not be negative")
		}
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if ic.MinRefresh > ic.MaxRefresh {
		bad("min_refresh", "%s exceeds max_refresh %s", ic.MinRefresh, ic.MaxRefresh)
	}
	return ic, errs
}

func parseAlgList(names []string) (algSet, []error) {
	var s algSet
	var errs []error
	if len(names) == 0 {
		errs = append(errs, errors.New("algorithms: at least one algorithm is required"))
	}
	for i, n := range names {
		a := parseAlg(n)
		switch {
		case strings.EqualFold(n, "none"):
			errs = append(errs, fmt.Errorf("algorithms[%d]: %q is never allowed", i, n))
		case a == algUnsupported:
			errs = append(errs, fmt.Errorf("algorithms[%d]: unsupported algorithm %q", i, n))
		default:
			s.add(a)
		}
	}
	return s, errs
}

// checkURL enforces the transport policy for every URL this package
// fetches: https, or http for loopback hosts, or http anywhere when
// insecure is set.
func checkURL(raw string, insecure bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	return checkParsedURL(u, insecure)
}

func checkParsedURL(u *url.URL, insecure bool) error {
	if u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("URL %q must be absolute with a host", u.Redacted())
	}
	if u.User != nil {
		return fmt.Errorf("URL %q must not carry credentials", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if insecure || isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("URL %q must use https (http is allowed only for loopback hosts or with insecure_http)", u.Redacted())
	}
	return fmt.Errorf("URL %q: unsupported scheme %q", u.Redacted(), u.Scheme)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
