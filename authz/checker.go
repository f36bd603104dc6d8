// Package authz runs Tollgate's Check pipeline and its front doors.
//
// A Check goes credential → identity → decision → response: the request is
// routed to the service its owners declared, the credential (an opaque
// session ID or a bearer JWT) is found and resolved to an identity, the
// service's audience rules and the Rego policy decide, and the outcome is a
// Decision value carrying the upstream header rewrite (identity headers, the
// internal JWT minted for the destination, the outside credential removed).
// A deny is a Decision, never an error: Check returns a non-nil error only
// when something technical broke, and then the Decision must be ignored.
//
// Invariants: a Decision never allows without having passed the service's
// auth mode and the policy; identity headers and the internal-token header a
// client sent are always removed or overwritten; no field of a Decision, log
// line or metric label carries a raw credential.
package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/jwks"
	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// TokenVerifier verifies a bearer JWT's signature, issuer and validity
// period. The audience is checked by the Checker, per service.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*jwks.Token, error)
}

// SessionLookup resolves an opaque session ID (the hot path of a store).
type SessionLookup interface {
	Lookup(ctx context.Context, id string) (session.Record, error)
}

// PolicyEvaluator evaluates the Rego decision for one request.
type PolicyEvaluator interface {
	Eval(ctx context.Context, in *policy.Input) (policy.Result, error)
}

// TokenMinter mints the internal JWT for the destination service.
type TokenMinter interface {
	Mint(ctx context.Context, req keyring.MintRequest) (string, error)
}

var (
	_ TokenVerifier   = (*jwks.Verifier)(nil)
	_ SessionLookup   = (session.Store)(nil)
	_ PolicyEvaluator = (*policy.Engine)(nil)
	_ TokenMinter     = (*keyring.Keyring)(nil)
)

// AuthMode says whether a service requires a credential.
type AuthMode uint8

const (
	// AuthRequired denies a request without a valid credential (401).
	AuthRequired AuthMode = iota
	// AuthOptional lets a request without a credential through as
	// anonymous; an invalid credential is still a 401.
	AuthOptional
	// AuthNone ignores credentials entirely.
	AuthNone
)

// ParseAuthMode maps the config words required, optional and none.
func ParseAuthMode(s string) (AuthMode, error) {
	switch s {
	case "required", "":
		return AuthRequired, nil
	case "optional":
		return AuthOptional, nil
	case "none":
		return AuthNone, nil
	}
	return 0, fmt.Errorf("unknown auth mode %q", s)
}

// Service is a destination as its owners declared it.
type Service struct {
	Name         string
	Hosts        []string // "*" matches any host
	PathPrefixes []string // default ["/"]
	Audiences    []string // a token's aud must contain one of these
	Auth         AuthMode
	// InternalAudience is the aud of internal tokens minted for this
	// service. Default: Name.
	InternalAudience string
}

// ClaimHeader copies a verified claim into an upstream header.
type ClaimHeader struct {
	Claim  string
	Header string // lower-case
}

// Config is the Checker's configuration.
type Config struct {
	Services []Service
	// ClaimHeaders are set upstream, overwriting client-sent values. Order
	// is preserved in the response.
	ClaimHeaders []ClaimHeader
	// RemoveHeaders are removed upstream when a credential was accepted.
	RemoveHeaders []string
	// MaxTokenBytes makes larger bearer tokens a 401 before they are
	// handed to the verifier. Default 16384.
	MaxTokenBytes int
}

// SessionConfig says where session IDs are read and how store failures
// are treated.
type SessionConfig struct {
	Cookie string // cookie name, e.g. tollgate_session
	Header string // header name, e.g. x-session-id
	// PreferJWT makes a bearer JWT win when both credentials are present.
	// Default false: the session wins.
	PreferJWT bool
	// AnonymousOnStoreError treats a request whose session cannot be
	// looked up as anonymous. Default false: deny with 503.
	AnonymousOnStoreError bool
}

// MintConfig configures internal-token injection.
type MintConfig struct {
	// Header carries the internal token upstream, e.g. x-internal-jwt.
	Header string
	// ForJWT also mints for callers that presented an external JWT.
	ForJWT bool
}

// Option configures optional dependencies of a Checker.
type Option func(*Checker)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *Checker) { c.log = l } }

// WithRegisterer registers the Check metrics with r. Default: none.
func WithRegisterer(r prometheus.Registerer) Option { return func(c *Checker) { c.reg = r } }

// WithClock sets the clock used for latency metrics. Default time.Now.
func WithClock(now func() time.Time) Option { return func(c *Checker) { c.now = now } }

// WithSessions accepts opaque session IDs resolved by s. Default: none.
func WithSessions(s SessionLookup, cfg SessionConfig) Option {
	return func(c *Checker) { c.sessions, c.sessionCfg = s, cfg }
}

// WithPolicy makes p decide every request after authentication. Default:
// none (authentication alone decides).
func WithPolicy(p PolicyEvaluator) Option { return func(c *Checker) { c.policy = p } }

// WithMinter injects an internal JWT minted by m for the destination's
// audience on every allowed, identified request. Default: none.
func WithMinter(m TokenMinter, cfg MintConfig) Option {
	return func(c *Checker) { c.minter, c.mintCfg = m, cfg }
}

// Checker runs the Check pipeline. It is safe for concurrent use.
type Checker struct {
	routes        *router
	verifier      TokenVerifier
	claimHeaders  []ClaimHeader
	removeHeaders []string
	maxToken      int

	sessions   SessionLookup
	sessionCfg SessionConfig
	policy     PolicyEvaluator
	minter     TokenMinter
	mintCfg    MintConfig

	// Headers only Tollgate may set: identity headers and the internal
	// token. Policy output cannot touch them.
	reserved map[string]bool
	// anonRemove is what an anonymous request loses upstream: every
	// identity header and the internal-token header.
	anonRemove []string

	log     *slog.Logger
	reg     prometheus.Registerer
	now     func() time.Time
	metrics *metrics
}

// New validates cfg and returns a Checker. verifier may be nil only when no
// service needs a bearer token.
func New(cfg Config, verifier TokenVerifier, opts ...Option) (*Checker, error) {
	c := &Checker{
		verifier:      verifier,
		claimHeaders:  cfg.ClaimHeaders,
		removeHeaders: cfg.RemoveHeaders,
		maxToken:      cfg.MaxTokenBytes,
		log:           slog.Default(),
		now:           time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	if c.maxToken <= 0 {
		c.maxToken = 16 << 10
	}
	services := make([]Service, len(cfg.Services))
	copy(services, cfg.Services)
	for i := range services {
		if services[i].InternalAudience == "" {
			services[i].InternalAudience = services[i].Name
		}
	}
	r, err := newRouter(services)
	if err != nil {
		return nil, err
	}
	c.routes = r
	if verifier == nil && c.sessions == nil {
		for _, s := range services {
			if s.Auth != AuthNone {
				return nil, fmt.Errorf("authz: service %q needs a token verifier or a session store", s.Name)
			}
		}
	}
	if c.sessions != nil && (c.sessionCfg.Cookie == "" && c.sessionCfg.Header == "") {
		return nil, errors.New("authz: sessions need a cookie or header name")
	}
	if c.minter != nil && c.mintCfg.Header == "" {
		return nil, errors.New("authz: internal tokens need a header name")
	}
	c.reserved = map[string]bool{}
	for _, ch := range c.claimHeaders {
		c.reserved[ch.Header] = true
		c.anonRemove = append(c.anonRemove, ch.Header)
	}
	if c.minter != nil {
		c.reserved[c.mintCfg.Header] = true
		c.anonRemove = append(c.anonRemove, c.mintCfg.Header)
	}
	for _, h := range c.removeHeaders {
		c.reserved[h] = true
	}
	if c.sessions != nil && c.sessionCfg.Header != "" {
		c.reserved[c.sessionCfg.Header] = true
	}
	c.reserved["cookie"] = c.sessions != nil
	c.metrics, err = newMetrics(c.reg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Request is what a front door extracted from the incoming request.
type Request struct {
	// ID is Envoy's x-request-id, when present.
	ID     string
	Method string
	// Host is the :authority or Host, possibly with a port.
	Host string
	// Path is the request path, possibly with a query.
	Path string
	// Headers are keyed by lower-case name, as Envoy sends them. The map
	// is read, never modified.
	Headers map[string]string
	// Check is the original CheckRequest, when the front door has one;
	// policies see its attributes.
	Check *authv3.CheckRequest
}

// Header is one header name and value.
type Header struct {
	Key   string
	Value string
}

// IdentityType says how the caller was identified.
type IdentityType uint8

const (
	// Anonymous: no credential (auth optional or none).
	Anonymous IdentityType = iota
	// JWT: a verified bearer token.
	JWT
	// Session: an opaque session ID found in the session store.
	Session
)

func (t IdentityType) String() string {
	switch t {
	case JWT:
		return "jwt"
	case Session:
		return "session"
	default:
		return "anonymous"
	}
}

// Identity is the verified caller. It never holds the raw credential.
type Identity struct {
	Type      IdentityType
	Issuer    string
	Subject   string
	Audiences []string
	Claims    map[string]any
	// key identifies the credential for per-identity caches (a hash,
	// never the credential).
	key string
}

// Decision is the outcome of a Check.
type Decision struct {
	Allowed bool
	// Status is the HTTP status: 200 when allowed, else 401, 403, 500 or 503.
	Status int
	// Reason is the stable code; reason.OK when allowed.
	Reason  reason.Code
	Service string
	// Identity is the verified caller (zero when none).
	Identity Identity
	// Upstream headers are set on the request to the service, overwriting
	// any value the client sent.
	Upstream []Header
	// Remove lists headers removed from the request to the service.
	Remove []string
	// Response headers go to the client: with a denial, or (from a policy's
	// response_headers_to_add) with the service's response.
	Response []Header
	// Body is the denial body.
	Body string
	// QuerySet and QueryRemove rewrite the upstream query (policy).
	QuerySet    []Header
	QueryRemove []string
	// DynamicMetadata is passed to Envoy's other filters (policy).
	DynamicMetadata *structpb.Struct

	// detail is the internal cause of a denial, for logs only.
	detail error
}

// Check runs the pipeline for one request. A non-nil error means a
// technical failure; the Decision is then meaningless.
func (c *Checker) Check(ctx context.Context, req *Request) (Decision, error) {
	start := c.now()
	d, cred, err := c.check(ctx, req)
	c.observe(ctx, req, &d, cred, err, start)
	return d, err
}

// check is the pipeline: route → identity → policy → response.
func (c *Checker) check(ctx context.Context, req *Request) (Decision, credential, error) {
	svc := c.routes.match(req.Host, req.Path)
	if svc == nil {
		return c.deny(req, nil, reason.NoService, 403, ""), credential{}, nil
	}
	id, cred, denied, err := c.identify(ctx, req, svc)
	if err != nil || denied != nil {
		if denied != nil {
			return *denied, cred, nil
		}
		return Decision{Service: svc.Name}, cred, err
	}
	var pol *policy.Result
	if c.policy != nil {
		res, denied, err := c.decide(ctx, req, svc, &id)
		if err != nil || denied != nil {
			if denied != nil {
				return *denied, cred, nil
			}
			return Decision{Service: svc.Name}, cred, err
		}
		pol = &res
	}
	d, err := c.respond(ctx, req, svc, &id, cred, pol)
	return d, cred, err
}

func (c *Checker) observe(ctx context.Context, req *Request, d *Decision, cr credential, err error, start time.Time) {
	code := d.Reason
	result := resultAllowed
	switch {
	case err != nil:
		result, code = resultError, reason.Of(err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			code = "context_" + reason.Code(fmtCtxErr(err))
		}
	case !d.Allowed:
		result = resultDenied
	}
	c.metrics.observe(result, code, c.now().Sub(start))
	switch {
	case err != nil:
		c.log.LogAttrs(ctx, slog.LevelError, "check failed",
			slog.String("reason", string(code)), slog.String("service", d.Service),
			slog.String("request_id", req.ID), slog.String("credential", cr.kind.String()),
			slog.String("credential_hash", cr.hash()), slog.String("error", err.Error()))
	case !d.Allowed:
		attrs := []slog.Attr{
			slog.String("reason", string(code)), slog.Int("status", d.Status),
			slog.String("service", d.Service), slog.String("request_id", req.ID),
			slog.String("credential", cr.kind.String()), slog.String("credential_hash", cr.hash()),
		}
		if d.Identity.Issuer != "" {
			attrs = append(attrs, slog.String("issuer", d.Identity.Issuer))
		}
		if d.detail != nil {
			attrs = append(attrs, slog.String("detail", d.detail.Error()))
		}
		lvl := slog.LevelInfo
		if d.Status >= 500 {
			lvl = slog.LevelWarn
		}
		c.log.LogAttrs(ctx, lvl, "check denied", attrs...)
	case c.log.Enabled(ctx, slog.LevelDebug):
		c.log.LogAttrs(ctx, slog.LevelDebug, "check allowed",
			slog.String("service", d.Service), slog.String("identity", d.Identity.Type.String()),
			slog.String("issuer", d.Identity.Issuer), slog.String("request_id", req.ID),
			slog.String("credential_hash", cr.hash()))
	}
}

func fmtCtxErr(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded"
	}
	return "canceled"
}

// TokenHash returns a short, non-reversible tag of a credential for logs:
// the first 12 hex digits of its SHA-256. "" for no credential.
func TokenHash(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
