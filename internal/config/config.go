// Package config loads and validates Tollgate's YAML configuration.
//
// Decoding is strict: an unknown key anywhere is an error, reported with its
// YAML path and line. Every problem found is reported at once (errors.Join),
// each prefixed by the YAML path of the offending key, so `tollgate check`
// can show an operator the whole list in one run. `${ENV_VAR}` references in
// scalar values are expanded after parsing, so an environment value can never
// change the structure of the document.
//
// Invariant: a *Config returned by Load or Default has passed Validate and has
// every default filled in; consumers never re-check or re-default it.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Config is the whole Tollgate configuration.
type Config struct {
	Server   Server    `yaml:"server"`
	Log      Log       `yaml:"log"`
	Issuers  []Issuer  `yaml:"issuers"`
	Services []Service `yaml:"services"`
	Headers  Headers   `yaml:"headers"`
	Tokens   Tokens    `yaml:"tokens"`
	Dev      Dev       `yaml:"dev"`

	Policy        Policy        `yaml:"policy"`
	InternalToken InternalToken `yaml:"internal_token"`
	Keys          Keys          `yaml:"keys"`
	Sessions      Sessions      `yaml:"sessions"`
	Admin         Admin         `yaml:"admin"`

	// Path is the file the config was loaded from ("" for the embedded
	// development config). Relative paths inside it are resolved against
	// its directory at load time.
	Path string `yaml:"-"`
}

// Server holds the listeners and process-level timeouts.
type Server struct {
	// GRPCAddress serves ext_authz Check and grpc.health.v1. Default 127.0.0.1:9191.
	GRPCAddress string `yaml:"grpc_address"`
	// HTTPAddress serves /healthz, /readyz and /metrics. Default 127.0.0.1:8181.
	HTTPAddress string `yaml:"http_address"`
	// Reflection enables gRPC server reflection. Default false.
	Reflection bool `yaml:"reflection"`
	// ShutdownTimeout bounds the drain of in-flight Checks on SIGTERM. Default 10s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// StartupTimeout is how long start-up waits for every issuer's keys before
	// serving anyway (and reporting the missing issuers). Default 10s.
	StartupTimeout Duration `yaml:"startup_timeout"`
	// AdminAddress serves the session admin API; empty disables it.
	AdminAddress string `yaml:"admin_address"`
	// GCPercent sets the Go GC target (GOGC). Default 300: Tollgate's live
	// heap is small and every Check allocates, so the default of 100 made
	// the collector a large share of a Check's CPU. MemoryLimitMiB bounds
	// what this costs. The GOGC environment variable, when set, wins.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitMiB is the Go soft memory limit (GOMEMLIMIT). Default:
	// 48 MiB plus 1.5 × tokens.cache_max_bytes (144 MiB by default). The GOMEMLIMIT environment
	// variable, when set, wins; set it to about 90% of a container's limit.
	MemoryLimitMiB int `yaml:"memory_limit_mib"`
	// Pprof mounts Go's profiling handlers under /debug/pprof/ on the HTTP
	// listener. Default false: they expose internals, enable them only
	// where the HTTP listener is private.
	Pprof bool `yaml:"pprof"`
	// MaxConcurrentStreams per gRPC connection; 0 means gRPC's default.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
}

// Log configures the structured logger.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// Issuer is one external token issuer Tollgate trusts.
type Issuer struct {
	Issuer       string   `yaml:"issuer"`
	JWKSURI      string   `yaml:"jwks_uri"`
	Discovery    bool     `yaml:"discovery"`
	Algorithms   []string `yaml:"algorithms"`
	Leeway       Duration `yaml:"leeway"`
	InsecureHTTP bool     `yaml:"insecure_http"`
	// HMACSecret enables HS256/384/512 for this issuer only. Use ${ENV}.
	HMACSecret Secret `yaml:"hmac_secret"`
	// RefreshMin and RefreshMax clamp the JWKS Cache-Control max-age.
	// Defaults 1m and 1h.
	RefreshMin Duration `yaml:"refresh_min"`
	RefreshMax Duration `yaml:"refresh_max"`
	// UnknownKeyRefreshInterval rate-limits refreshes triggered by unknown
	// kids. Default 10s.
	UnknownKeyRefreshInterval Duration `yaml:"unknown_key_refresh_interval"`
	// FetchTimeout bounds one JWKS or discovery fetch. Default 5s.
	FetchTimeout Duration `yaml:"fetch_timeout"`
}

// Auth modes of a service.
const (
	AuthRequired = "required"
	AuthOptional = "optional"
	AuthNone     = "none"
)

// Service is a destination declared by its owners.
type Service struct {
	Name         string   `yaml:"name"`
	Hosts        []string `yaml:"hosts"`
	PathPrefixes []string `yaml:"path_prefixes"`
	Audiences    []string `yaml:"audiences"`
	// Auth is required, optional or none. Default required.
	Auth string `yaml:"auth"`
	// PolicyQuery overrides policy.query for this service.
	PolicyQuery string `yaml:"policy_query"`
	// InternalAudience is the aud of internal tokens minted for this
	// service. Default: the service name.
	InternalAudience string `yaml:"internal_audience"`
}

// Headers configures the upstream header rewrite for an authenticated request.
type Headers struct {
	// ClaimsToHeaders maps a claim name to the upstream header that carries it.
	ClaimsToHeaders map[string]string `yaml:"claims_to_headers"`
	// Remove lists headers removed upstream when a credential was accepted.
	// Default ["authorization"].
	Remove []string `yaml:"remove"`
}

// ClaimHeader is one entry of ClaimsToHeaders in a deterministic order.
type ClaimHeader struct {
	Claim  string
	Header string
}

// ClaimHeaders returns ClaimsToHeaders ordered by header name, so that the
// response is identical from run to run.
func (h Headers) ClaimHeaders() []ClaimHeader {
	out := make([]ClaimHeader, 0, len(h.ClaimsToHeaders))
	for c, hd := range h.ClaimsToHeaders {
		out = append(out, ClaimHeader{Claim: c, Header: hd})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Header < out[j].Header })
	return out
}

// Tokens bounds bearer tokens and the verified-token cache.
type Tokens struct {
	// MaxBytes rejects larger tokens before parsing. Default 16384.
	MaxBytes int `yaml:"max_bytes"`
	// CacheMaxEntries bounds the verified-token cache. Default 100000.
	CacheMaxEntries int `yaml:"cache_max_entries"`
	// CacheMaxBytes bounds the approximate memory of cached claims. Default 64 MiB.
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
}

// Dev is the development mode used by `make run`: Tollgate serves a local dev
// issuer's JWKS on its own HTTP listener and trusts it.
type Dev struct {
	Enabled bool `yaml:"enabled"`
	// Issuer is the iss of dev tokens. Default https://dev.tollgate.local.
	Issuer string `yaml:"issuer"`
	// KeyFile holds the dev issuer's ES256 private key (PEM), created 0600 on
	// first use. Default .tollgate/dev-key.pem.
	KeyFile string `yaml:"key_file"`
	// ExamplePolicyDir, when set, receives an example policy and its Rego
	// tests at start-up if the directory does not exist yet (list it in
	// policy.paths to serve it). The embedded development config uses it.
	ExamplePolicyDir string `yaml:"example_policy_dir"`
	// AdminTokenFile, when set, receives a random admin token (0600) at
	// start-up if the file does not exist yet.
	AdminTokenFile string `yaml:"admin_token_file"`
}

// Default returns a configuration with every default set and no issuers or
// services.
func Default() *Config {
	return &Config{
		Server: Server{
			GRPCAddress:     "127.0.0.1:9191",
			HTTPAddress:     "127.0.0.1:8181",
			ShutdownTimeout: Duration(10 * time.Second),
			StartupTimeout:  Duration(10 * time.Second),
		},
		Log:     Log{Level: "info", Format: "json"},
		Headers: Headers{Remove: []string{"authorization"}},
		Tokens: Tokens{
			MaxBytes:        16 << 10,
			CacheMaxEntries: 100_000,
			CacheMaxBytes:   64 << 20,
		},
		Dev: Dev{Issuer: "https://dev.tollgate.local", KeyFile: ".tollgate/dev-key.pem"},
	}
}

// Development returns the embedded configuration that `tollgate serve`
// uses without --config: a dev issuer whose keys Tollgate serves itself, one
// service for any host with audience "dev", the example policy in
// .tollgate/policy (written on first start, reloaded on edit), in-memory
// sessions with the admin API on 127.0.0.1:8282 (token in
// .tollgate/admin-token), and internal tokens signed by keys in
// .tollgate/keys. Everything it writes stays under .tollgate/.
func Development() *Config {
	c := Default()
	c.Log.Format = "text"
	c.Dev.Enabled = true
	c.Dev.ExamplePolicyDir = ".tollgate/policy"
	c.Dev.AdminTokenFile = ".tollgate/admin-token"
	c.Policy.Paths = []string{c.Dev.ExamplePolicyDir}
	c.Sessions.Store = "memory"
	c.Server.AdminAddress = "127.0.0.1:8282"
	c.Admin.TokenFile = c.Dev.AdminTokenFile
	c.InternalToken.Enabled = true
	c.InternalToken.Claims = []string{"roles"}
	c.Keys.Dir = ".tollgate/keys"
	c.Headers.ClaimsToHeaders = map[string]string{"sub": "x-user-id", "roles": "x-user-roles"}
	c.Services = []Service{{
		Name:         "dev",
		Hosts:        []string{"*"},
		PathPrefixes: []string{"/"},
		Audiences:    []string{"dev"},
		Auth:         AuthRequired,
	}}
	c.fill()
	return c
}

// LocalHTTPURL is the base URL at which this machine reaches the HTTP
// listener: a wildcard listen address ("0.0.0.0", "[::]", ":8181")
// becomes 127.0.0.1. host is the host part of that URL.
func (s Server) LocalHTTPURL() (base, host string) {
	host, port, _ := net.SplitHostPort(s.HTTPAddress)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), host
}

// DevIssuer returns the issuer entry the dev mode adds: it trusts the dev
// key published on Tollgate's own HTTP listener.
func (c *Config) DevIssuer() Issuer {
	// Tollgate fetches its own dev JWKS over loopback even when it
	// listens on every interface.
	base, host := c.Server.LocalHTTPURL()
	return Issuer{
		Issuer:       c.Dev.Issuer,
		JWKSURI:      base + "/dev/jwks.json",
		InsecureHTTP: !IsLoopback(host),
		Algorithms:   []string{"ES256"},
		Leeway:       Duration(30 * time.Second),
		RefreshMin:   Duration(time.Minute),
		RefreshMax:   Duration(time.Hour),
		// A dev token minted right after start-up must not wait for the
		// rate limit.
		UnknownKeyRefreshInterval: Duration(time.Second),
		FetchTimeout:              Duration(2 * time.Second),
	}
}

// fill sets per-entry defaults that Default cannot know in advance.
func (c *Config) fill() {
	if c.Server.GCPercent == 0 {
		c.Server.GCPercent = 300
	}
	if c.Server.MemoryLimitMiB == 0 {
		c.Server.MemoryLimitMiB = 48 + int(3*c.Tokens.CacheMaxBytes/2>>20)
	}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		if is.RefreshMin == 0 {
			is.RefreshMin = Duration(time.Minute)
		}
		if is.RefreshMax == 0 {
			is.RefreshMax = Duration(time.Hour)
		}
		if is.UnknownKeyRefreshInterval == 0 {
			is.UnknownKeyRefreshInterval = Duration(10 * time.Second)
		}
		if is.FetchTimeout == 0 {
			is.FetchTimeout = Duration(5 * time.Second)
		}
	}
	c.fillSections()
	for i := range c.Services {
		s := &c.Services[i]
		if s.InternalAudience == "" {
			s.InternalAudience = s.Name
		}
		if s.Auth == "" {
			s.Auth = AuthRequired
		}
		if len(s.PathPrefixes) == 0 {
			s.PathPrefixes = []string{"/"}
		}
	}
}

// resolvePaths makes relative file paths relative to the config file's
// directory rather than the process's working directory.
func (c *Config) resolvePaths() {
	if c.Path == "" {
		return
	}
	dir := filepath.Dir(c.Path)
	abs := func(p *string) {
		if *p != "" && *p != "-" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Dev.KeyFile)
	abs(&c.Dev.ExamplePolicyDir)
	abs(&c.Dev.AdminTokenFile)
	for i := range c.Policy.Paths {
		abs(&c.Policy.Paths[i])
	}
	abs(&c.Policy.DecisionLog.Path)
	if c.Policy.Bundle != nil {
		abs(&c.Policy.Bundle.VerificationKeyFile)
	}
	abs(&c.Keys.Dir)
	abs(&c.Keys.Redis.KEKFile)
	abs(&c.Keys.Redis.PasswordFile)
	abs(&c.Keys.Redis.TLS.CAFile)
	abs(&c.Keys.PKCS11.PINFile)
	abs(&c.Keys.PKCS11.StateFile)
	abs(&c.Sessions.Redis.PasswordFile)
	abs(&c.Sessions.Redis.TLS.CAFile)
	abs(&c.Admin.TokenFile)
}

// pathErr is one validation problem at a YAML path.
type pathErr struct {
	path string
	msg  string
}

func (e pathErr) Error() string { return e.path + ": " + e.msg }

type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, pathErr{path: path, msg: fmt.Sprintf(format, args...)})
}

// Validate reports every problem in c, each prefixed by its YAML path.
func (c *Config) Validate() error {
	var p problems
	c.Server.validate(&p)
	c.Log.validate(&p)
	seenIss := map[string]int{}
	for i, is := range c.Issuers {
		path := fmt.Sprintf("issuers[%d]", i)
		is.validate(path, &p)
		if j, dup := seenIss[is.Issuer]; dup && is.Issuer != "" {
			p.add(path+".issuer", "duplicates issuers[%d].issuer %q", j, is.Issuer)
		}
		seenIss[is.Issuer] = i
	}
	if c.Dev.Enabled {
		if _, dup := seenIss[c.Dev.Issuer]; dup {
			p.add("dev.issuer", "%q is also configured under issuers", c.Dev.Issuer)
		}
		if c.Dev.KeyFile == "" {
			p.add("dev.key_file", "required when dev.enabled is true")
		}
		if c.Dev.Issuer == "" {
			p.add("dev.issuer", "required when dev.enabled is true")
		}
	}
	if len(c.Services) == 0 {
		p.add("services", "at least one service is required (a request that matches no service is denied)")
	}
	seenSvc := map[string]int{}
	for i, s := range c.Services {
		path := fmt.Sprintf("services[%d]", i)
		s.validate(path, &p)
		if j, dup := seenSvc[s.Name]; dup && s.Name != "" {
			p.add(path+".name", "duplicates services[%d].name %q", j, s.Name)
		}
		seenSvc[s.Name] = i
	}
	needIssuer := false
	for _, s := range c.Services {
		if s.Auth != AuthNone {
			needIssuer = true
		}
	}
	if needIssuer && len(c.Issuers) == 0 && !c.Dev.Enabled && !c.Sessions.Enabled() {
		p.add("issuers", "at least one issuer is required when a service has auth required or optional")
	}
	c.Headers.validate(&p)
	c.Tokens.validate(&p)
	c.validateSections(&p)
	return errors.Join(p...)
}

func (s Server) validate(p *problems) {
	for _, a := range []struct{ key, v string }{
		{"server.grpc_address", s.GRPCAddress},
		{"server.http_address", s.HTTPAddress},
	} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			p.add(a.key, "must be host:port: %v", err)
		}
	}
	if s.GRPCAddress == s.HTTPAddress && s.GRPCAddress != "" && !strings.HasSuffix(s.GRPCAddress, ":0") {
		p.add("server.http_address", "must differ from server.grpc_address")
	}
	if s.ShutdownTimeout <= 0 {
		p.add("server.shutdown_timeout", "must be positive")
	}
	if s.StartupTimeout < 0 {
		p.add("server.startup_timeout", "must not be negative")
	}
	if s.GCPercent < 0 {
		p.add("server.gc_percent", "must not be negative")
	}
	if s.MemoryLimitMiB < 0 {
		p.add("server.memory_limit_mib", "must not be negative")
	}
}

func (l Log) validate(p *problems) {
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, l.Level) {
		p.add("log.level", "must be one of debug, info, warn, error; got %q", l.Level)
	}
	if l.Format != "json" && l.Format != "text" {
		p.add("log.format", "must be json or text; got %q", l.Format)
	}
}

// SupportedAlgorithms are the JWS algorithms an issuer may allow.
var SupportedAlgorithms = []string{
	"ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512", "EdDSA", "HS256", "HS384", "HS512",
}

func (is Issuer) validate(path string, p *problems) {
	if is.Issuer == "" {
		p.add(path+".issuer", "required")
	}
	switch {
	case is.Discovery && is.JWKSURI != "":
		p.add(path+".jwks_uri", "set either jwks_uri or discovery: true, not both")
	case !is.Discovery && is.JWKSURI == "" && !is.onlyHMAC():
		p.add(path+".jwks_uri", "required unless discovery: true")
	}
	if is.JWKSURI != "" {
		checkFetchURL(path+".jwks_uri", is.JWKSURI, is.InsecureHTTP, p)
	}
	if is.Discovery && is.Issuer != "" {
		checkFetchURL(path+".issuer", is.Issuer, is.InsecureHTTP, p)
	}
	if len(is.Algorithms) == 0 {
		p.add(path+".algorithms", "required: list the algorithms this issuer signs with, e.g. [ES256]")
	}
	for j, a := range is.Algorithms {
		ap := fmt.Sprintf("%s.algorithms[%d]", path, j)
		switch {
		case strings.EqualFold(a, "none"):
			p.add(ap, `"none" is never accepted`)
		case !slices.Contains(SupportedAlgorithms, a):
			p.add(ap, "unsupported algorithm %q (supported: %s)", a, strings.Join(SupportedAlgorithms, ", "))
		case strings.HasPrefix(a, "HS") && is.HMACSecret == "":
			p.add(ap, "%s needs hmac_secret for this issuer", a)
		}
	}
	if is.HMACSecret != "" {
		// RFC 7518 §3.2: a key at least as long as the hash output.
		need := 32
		for _, a := range is.Algorithms {
			switch a {
			case "HS384":
				need = max(need, 48)
			case "HS512":
				need = max(need, 64)
			}
		}
		if len(is.HMACSecret) < need {
			p.add(path+".hmac_secret", "must be at least %d bytes for %s", need, strings.Join(is.Algorithms, ", "))
		}
	}
	if is.JWKSURI != "" && is.onlyHMAC() {
		p.add(path+".jwks_uri", "not used: every algorithm of this issuer is HMAC; remove it or allow an asymmetric algorithm")
	}
	if is.Leeway < 0 || is.Leeway > Duration(5*time.Minute) {
		p.add(path+".leeway", "must be between 0s and 5m")
	}
	if is.RefreshMin <= 0 || is.RefreshMax < is.RefreshMin {
		p.add(path+".refresh_max", "must be ≥ refresh_min and both positive")
	}
	if is.UnknownKeyRefreshInterval <= 0 {
		p.add(path+".unknown_key_refresh_interval", "must be positive")
	}
	if is.FetchTimeout <= 0 {
		p.add(path+".fetch_timeout", "must be positive")
	}
}

// onlyHMAC reports whether the issuer needs no key set at all.
func (is Issuer) onlyHMAC() bool {
	if len(is.Algorithms) == 0 {
		return false
	}
	for _, a := range is.Algorithms {
		if !strings.HasPrefix(a, "HS") {
			return false
		}
	}
	return true
}

func (s Service) validate(path string, p *problems) {
	if s.Name == "" {
		p.add(path+".name", "required")
	}
	if len(s.Hosts) == 0 {
		p.add(path+".hosts", `required: list host names, or "*" for any host`)
	}
	for j, h := range s.Hosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			p.add(fmt.Sprintf("%s.hosts[%d]", path, j), "must be a host name without scheme or path, or \"*\"; got %q", h)
		}
	}
	for j, pp := range s.PathPrefixes {
		if !strings.HasPrefix(pp, "/") {
			p.add(fmt.Sprintf("%s.path_prefixes[%d]", path, j), "must start with \"/\"; got %q", pp)
		}
	}
	switch s.Auth {
	case AuthRequired, AuthOptional, AuthNone:
	default:
		p.add(path+".auth", "must be required, optional or none; got %q", s.Auth)
	}
	for j, a := range s.Audiences {
		if a == "" || a == "*" {
			p.add(fmt.Sprintf("%s.audiences[%d]", path, j), "must be a concrete audience; got %q", a)
		}
	}
}

func (h Headers) validate(p *problems) {
	seen := map[string]string{}
	for claim, hd := range h.ClaimsToHeaders {
		path := "headers.claims_to_headers." + claim
		if !validHeaderName(hd) {
			p.add(path, "must be a lower-case HTTP header name; got %q", hd)
		}
		if strings.HasPrefix(hd, ":") || hd == "host" || hd == "authorization" || hd == "cookie" {
			p.add(path, "cannot set %q", hd)
		}
		if other, dup := seen[hd]; dup {
			p.add(path, "header %q is also set from claim %q", hd, other)
		}
		seen[hd] = claim
	}
	for i, hd := range h.Remove {
		if !validHeaderName(hd) {
			p.add(fmt.Sprintf("headers.remove[%d]", i), "must be a lower-case HTTP header name; got %q", hd)
		}
		if _, both := seen[hd]; both {
			p.add(fmt.Sprintf("headers.remove[%d]", i), "%q is also set by claims_to_headers", hd)
		}
	}
}

func (t Tokens) validate(p *problems) {
	if t.MaxBytes < 256 || t.MaxBytes > 1<<20 {
		p.add("tokens.max_bytes", "must be between 256 and 1048576")
	}
	if t.CacheMaxEntries < 0 {
		p.add("tokens.cache_max_entries", "must not be negative")
	}
	if t.CacheMaxBytes < 0 {
		p.add("tokens.cache_max_bytes", "must not be negative")
	}
}

// validHeaderName accepts lower-case RFC 9110 token characters, the form
// Envoy uses for header keys.
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// LoadFile reads the file at path and returns the validated config.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path, os.LookupEnv)
}
