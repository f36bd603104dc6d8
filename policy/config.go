package policy

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Defaults of Config.
const (
	DefaultQuery         = "data.tollgate.authz.allow"
	DefaultTimeout       = 50 * time.Millisecond
	DefaultWatchDebounce = 100 * time.Millisecond
	DefaultPollInterval  = time.Minute
)

// Config configures an Engine. The zero value of every optional field means
// its documented default.
type Config struct {
	// Paths are .rego files, data documents (.json, .yaml, .yml) and
	// directories holding them, loaded like `opa run`: a data file's
	// content is placed at data.<its directory, relative to the path>.
	// Files and directories whose name starts with "." are skipped, and
	// so are *_test.rego files except to run them (TestOnReload, Test).
	Paths []string
	// Query is the decision evaluated for services without their own.
	// Default data.tollgate.authz.allow. data.envoy.authz.allow serves
	// OPA-Envoy policies unchanged.
	Query string
	// ServiceQueries maps a service name to its own query. Optional.
	ServiceQueries map[string]string
	// Timeout bounds one evaluation. Default 50ms.
	Timeout time.Duration
	// RegoVersion is "v1" (default) or "v0" for policies written before
	// OPA 1.0. A bundle's manifest may still declare its own.
	RegoVersion string
	// ExposeCredentials keeps the authorization, proxy-authorization,
	// cookie and x-session-id header values in input.attributes. Default
	// false: they read "[REDACTED]"; policies see input.identity instead.
	ExposeCredentials bool
	// TestOnReload runs the policies' own Rego tests (*_test.rego) before
	// a load is accepted; a failing test rejects it like a compile error.
	TestOnReload bool
	// DecisionLog writes one JSON line per decision when enabled.
	DecisionLog DecisionLogConfig
	// Bundle, when set, downloads an OPA bundle over HTTP and combines it
	// with the files of Paths.
	Bundle *BundleConfig
	// WatchDebounce is how long the file watcher waits for the files to be
	// quiet before recompiling. Default 100ms.
	WatchDebounce time.Duration
	// DecisionCache configures the cache of decisions.
	DecisionCache DecisionCacheConfig
}

// DecisionCacheConfig configures the decision cache. A query whose rules
// read only constant paths of the input (input.attributes.request.http.method,
// input.identity.claims.roles, …) and call no builtin whose result depends
// on more than its arguments (time.now_ns, http.send, rand.intn, …) makes
// the same decision for every request that agrees on those paths: such a
// decision is cached, keyed by the values at those paths, until the next
// policy load. Any other query is always evaluated; the load's log line
// says which and why.
type DecisionCacheConfig struct {
	// Disabled evaluates every decision.
	Disabled bool
	// MaxEntries bounds the decisions cached per query. Default 10,000.
	MaxEntries int
	// MaxBytes bounds the memory the decisions cached per query hold
	// (keys, headers, bodies; approximate). Default 16 MiB.
	MaxBytes int64
}

// DecisionLogConfig configures decision logs.
type DecisionLogConfig struct {
	Enabled bool
	// Path is a file, appended to and created 0600 if missing, or "-"
	// for standard output.
	Path string
}

// BundleConfig configures the bundle source. Bundles are fetched with
// OPA's own downloader: ETag / If-None-Match polling, signature
// verification and the bundle tarball format are OPA's.
type BundleConfig struct {
	// URL of the bundle, e.g. https://bundles.example.com/authz.tar.gz.
	URL string
	// PollInterval between downloads. Default 1m; a 304 answer costs one
	// request.
	PollInterval time.Duration
	// VerificationKey is the PEM public key (or HMAC secret) that must
	// have signed the bundle. Empty: bundles are not verified.
	VerificationKey string
	// KeyID names the key; it is the key used whatever "kid" the bundle's
	// signature carries. Default "default".
	KeyID string
	// Algorithm of the signature. Default RS256.
	Algorithm string
	// Scope, when set, must equal the scope claim of the signature.
	Scope string
}

// String describes the config without the verification key.
func (b BundleConfig) String() string {
	key := ""
	if b.VerificationKey != "" {
		key = " verification_key=[REDACTED]"
	}
	return fmt.Sprintf("bundle url=%s poll=%s%s key_id=%s scope=%s", b.URL, b.PollInterval, key, b.KeyID, b.Scope)
}

// withDefaults returns c with every default filled in.
func (c Config) withDefaults() Config {
	if c.Query == "" {
		c.Query = DefaultQuery
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RegoVersion == "" {
		c.RegoVersion = "v1"
	}
	if c.WatchDebounce <= 0 {
		c.WatchDebounce = DefaultWatchDebounce
	}
	if c.DecisionCache.MaxEntries == 0 {
		c.DecisionCache.MaxEntries = DefaultDecisionCacheEntries
	}
	if c.DecisionCache.MaxBytes == 0 {
		c.DecisionCache.MaxBytes = DefaultDecisionCacheBytes
	}
	if c.Bundle != nil {
		b := *c.Bundle
		if b.PollInterval <= 0 {
			b.PollInterval = DefaultPollInterval
		}
		if b.KeyID == "" {
			b.KeyID = "default"
		}
		if b.Algorithm == "" {
			b.Algorithm = "RS256"
		}
		c.Bundle = &b
	}
	return c
}

// Validate reports every problem of c at once, each prefixed by the name
// of its field.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Paths) == 0 && c.Bundle == nil {
		errs = append(errs, errors.New("paths: at least one path or a bundle is required"))
	}
	for i, p := range c.Paths {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("paths[%d]: empty", i))
		}
	}
	if _, err := regoVersion(c.RegoVersion); err != nil {
		errs = append(errs, fmt.Errorf("rego_version: %w", err))
	}
	if err := validQuery(c.Query); err != nil {
		errs = append(errs, fmt.Errorf("query: %w", err))
	}
	names := make([]string, 0, len(c.ServiceQueries))
	for name := range c.ServiceQueries {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := validQuery(c.ServiceQueries[name]); err != nil {
			errs = append(errs, fmt.Errorf("service_queries[%s]: %w", name, err))
		}
	}
	if c.DecisionCache.MaxEntries < 0 {
		errs = append(errs, errors.New("decision_cache.max_entries: must not be negative"))
	}
	if c.DecisionCache.MaxBytes < 0 {
		errs = append(errs, errors.New("decision_cache.max_bytes: must not be negative"))
	}
	if c.DecisionLog.Enabled && c.DecisionLog.Path == "" {
		errs = append(errs, errors.New(`decision_log.path: required when enabled (a file, or "-" for stdout)`))
	}
	if b := c.Bundle; b != nil {
		u, err := url.Parse(b.URL)
		switch {
		case err != nil || u.Host == "":
			errs = append(errs, errors.New("bundle.url: must be an absolute http(s) URL"))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, errors.New("bundle.url: scheme must be http or https"))
		}
		if b.VerificationKey != "" && !strings.HasPrefix(strings.ToUpper(b.Algorithm), "HS") {
			if err := checkPublicKey(b.VerificationKey); err != nil {
				errs = append(errs, fmt.Errorf("bundle.verification_key: %w", err))
			}
		}
		switch strings.ToUpper(b.Algorithm) {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "EDDSA":
		default:
			errs = append(errs, fmt.Errorf("bundle.algorithm: unsupported %q", b.Algorithm))
		}
	}
	return errors.Join(errs...)
}

func regoVersion(s string) (ast.RegoVersion, error) {
	switch s {
	case "", "v1":
		return ast.RegoV1, nil
	case "v0":
		return ast.RegoV0, nil
	}
	return ast.RegoUndefined, fmt.Errorf("must be v0 or v1, not %q", s)
}

// validQuery accepts a reference into data, such as data.envoy.authz.allow.
func validQuery(q string) error {
	ref, err := ast.ParseRef(q)
	if err != nil {
		return fmt.Errorf("%q is not a reference: %v", q, err)
	}
	if !ref[0].Equal(ast.DefaultRootDocument) || len(ref) < 2 {
		return fmt.Errorf("%q must be a reference into data, such as %s", q, DefaultQuery)
	}
	return nil
}

// checkPublicKey accepts the PEM forms OPA's bundle verifier accepts for
// a public key.
func checkPublicKey(text string) error {
	blk, _ := pem.Decode([]byte(text))
	if blk == nil {
		return errors.New("not a PEM block")
	}
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		_, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		_, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		_, err = x509.ParseCertificate(blk.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a public key or certificate", blk.Type)
	}
	return err
}
