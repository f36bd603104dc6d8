// Package authz runs Tollgate's Check pipeline and its front doors.
//
// A Check goes credential → identity → decision → response: the request is
// routed to the service its owners declared, the bearer credential is found
// and verified, the service's audience rules are applied, and the outcome is
// a Decision value. A deny is a Decision, never an error: Check returns a
// non-nil error only when something technical broke, and then the Decision
// must be ignored.
//
// Invariants: a Decision never allows without having passed the service's
// auth mode; identity headers a client sent are always removed or
// overwritten; no field of a Decision, log line or metric label carries the
// raw credential.
package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/jwks"
)

// TokenVerifier verifies a bearer JWT's signature, issuer and validity
// period. The audience is checked by the Checker, per service.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*jwks.Token, error)
}

var _ TokenVerifier = (*jwks.Verifier)(nil)

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

// Option configures optional dependencies of a Checker.
type Option func(*Checker)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *Checker) { c.log = l } }

// WithRegisterer registers the Check metrics with r. Default: none.
func WithRegisterer(r prometheus.Registerer) Option { return func(c *Checker) { c.reg = r } }

// WithClock sets the clock used for latency metrics. Default time.Now.
func WithClock(now func() time.Time) Option { return func(c *Checker) { c.now = now } }

// Checker runs the Check pipeline. It is safe for concurrent use.
type Checker struct {
	routes        *router
	verifier      TokenVerifier
	claimHeaders  []ClaimHeader
	removeHeaders []string
	maxToken      int

	log     *slog.Logger
	reg     prometheus.Registerer
	now     func() time.Time
	metrics *metrics
}

// New validates cfg and returns a Checker. verifier may be nil only when no
// service needs a credential.
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
	r, err := newRouter(cfg.Services)
	if err != nil {
		return nil, err
	}
	c.routes = r
	if verifier == nil {
		for _, s := range cfg.Services {
			if s.Auth != AuthNone {
				return nil, fmt.Errorf("authz: service %q needs a token verifier", s.Name)
			}
		}
	}
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
)

func (t IdentityType) String() string {
	switch t {
	case JWT:
		return "jwt"
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
}

// Decision is the outcome of a Check.
type Decision struct {
	Allowed bool
	// Status is the HTTP status: 200 when allowed, else 401, 403 or 503.
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
	// Response headers go to the client with a denial.
	Response []Header
	// Body is the denial body (JSON).
	Body string
}

// Check runs the pipeline for one request. A non-nil error means a
// technical failure; the Decision is then meaningless.
func (c *Checker) Check(ctx context.Context, req *Request) (Decision, error) {
	start := c.now()
	d, token, err := c.check(ctx, req)
	c.observe(ctx, req, &d, token, err, start)
	return d, err
}

func (c *Checker) check(ctx context.Context, req *Request) (d Decision, token string, err error) {
	svc := c.routes.match(req.Host, req.Path)
	if svc == nil {
		return c.deny(req, reason.NoService, 403, ""), "", nil
	}
	d.Service = svc.Name
	if svc.Auth == AuthNone {
		return c.allowAnonymous(svc), "", nil
	}
	token, present := bearer(req.Headers["authorization"])
	if !present {
		if svc.Auth == AuthOptional {
			return c.allowAnonymous(svc), "", nil
		}
		d = c.deny(req, reason.CredentialMissing, 401, `Bearer realm="tollgate"`)
		d.Service = svc.Name
		return d, "", nil
	}
	if token == "" {
		return c.denyToken(req, svc, reason.TokenMalformed), "", nil
	}
	if len(token) > c.maxToken {
		return c.denyToken(req, svc, reason.TokenTooLarge), token, nil
	}
	tok, err := c.verifier.Verify(ctx, token)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return d, token, ctxErr
		}
		switch code := reason.Of(err); code {
		case reason.Internal:
			return d, token, fmt.Errorf("verify token: %w", err)
		case reason.JWKSUnavailable:
			d = c.deny(req, code, 503, "")
			d.Service = svc.Name
			d.Response = append(d.Response, Header{Key: "retry-after", Value: "5"})
			return d, token, nil
		default:
			return c.denyToken(req, svc, code), token, nil
		}
	}
	if len(svc.Audiences) > 0 {
		if len(tok.Audience) == 0 {
			return c.denyToken(req, svc, reason.TokenMissingAud), token, nil
		}
		if !tok.HasAudience(svc.Audiences) {
			return c.denyToken(req, svc, reason.TokenAudience), token, nil
		}
	}
	return c.allowToken(svc, tok), token, nil
}

func (c *Checker) allowAnonymous(svc *Service) Decision {
	// Identity headers can only come from Tollgate: strip what a client
	// sent even when there is no identity to put in their place.
	rm := make([]string, len(c.claimHeaders))
	for i, ch := range c.claimHeaders {
		rm[i] = ch.Header
	}
	return Decision{Allowed: true, Status: 200, Reason: reason.OK, Service: svc.Name, Remove: rm}
}

func (c *Checker) allowToken(svc *Service, tok *jwks.Token) Decision {
	d := Decision{
		Allowed: true,
		Status:  200,
		Reason:  reason.OK,
		Service: svc.Name,
		Identity: Identity{
			Type:      JWT,
			Issuer:    tok.Issuer,
			Subject:   tok.Subject,
			Audiences: tok.Audience,
			Claims:    tok.Claims,
		},
		Remove: c.removeHeaders,
	}
	if len(c.claimHeaders) > 0 {
		d.Upstream = make([]Header, 0, len(c.claimHeaders))
		var missing []string
		for _, ch := range c.claimHeaders {
			if v, ok := claimValue(tok.Claims[ch.Claim]); ok {
				d.Upstream = append(d.Upstream, Header{Key: ch.Header, Value: v})
				continue
			}
			// A claim the token lacks must not let a client-sent
			// header of the same name through.
			if missing == nil {
				missing = make([]string, 0, len(c.removeHeaders)+len(c.claimHeaders))
				missing = append(missing, c.removeHeaders...)
			}
			missing = append(missing, ch.Header)
		}
		if missing != nil {
			d.Remove = missing
		}
	}
	return d
}

func (c *Checker) denyToken(req *Request, svc *Service, code reason.Code) Decision {
	d := c.deny(req, code, 401, `Bearer realm="tollgate", error="invalid_token", error_description="`+code.Description()+`"`)
	d.Service = svc.Name
	return d
}

func (c *Checker) deny(req *Request, code reason.Code, status int, challenge string) Decision {
	d := Decision{Status: status, Reason: code, Body: denyBody(code, req.ID)}
	if challenge != "" {
		d.Response = []Header{{Key: "www-authenticate", Value: challenge}}
	}
	return d
}

func (c *Checker) observe(ctx context.Context, req *Request, d *Decision, token string, err error, start time.Time) {
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
			slog.String("request_id", req.ID), slog.String("token", TokenHash(token)),
			slog.String("error", err.Error()))
	case !d.Allowed:
		c.log.LogAttrs(ctx, slog.LevelInfo, "check denied",
			slog.String("reason", string(code)), slog.Int("status", d.Status),
			slog.String("service", d.Service), slog.String("request_id", req.ID),
			slog.String("token", TokenHash(token)))
	case c.log.Enabled(ctx, slog.LevelDebug):
		c.log.LogAttrs(ctx, slog.LevelDebug, "check allowed",
			slog.String("service", d.Service), slog.String("identity", d.Identity.Type.String()),
			slog.String("issuer", d.Identity.Issuer), slog.String("request_id", req.ID),
			slog.String("token", TokenHash(token)))
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
