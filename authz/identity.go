package authz

import (
	"context"
	"log/slog"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/session"
)

// credentialKind says which outside credential a request carried.
type credentialKind uint8

const (
	noCredential credentialKind = iota
	bearerCredential
	sessionCredential
)

// credential is the outside credential of a request. raw is used only to
// verify or look it up and to log its hash; it never reaches a Decision.
type credential struct {
	kind credentialKind
	raw  string
	// sessionPresent records that a session ID was sent even when a
	// bearer token won, so it is still stripped upstream.
	sessionPresent bool
}

// findCredential applies the precedence between a session ID and a bearer
// token. A request with neither has kind noCredential; a Bearer header with
// an empty token is a bearer credential with raw "" (malformed).
func (c *Checker) findCredential(req *Request) (credential, bool) {
	var cr credential
	token, hasBearer := bearer(req.Headers["authorization"])
	var sid string
	hasSession := false
	if c.sessions != nil {
		sid, hasSession = session.IDFromRequest(req.Headers, c.sessionCfg.Cookie, c.sessionCfg.Header)
	}
	cr.sessionPresent = hasSession
	switch {
	case hasSession && (!hasBearer || !c.sessionCfg.PreferJWT):
		cr.kind, cr.raw = sessionCredential, sid
	case hasBearer:
		cr.kind, cr.raw = bearerCredential, token
	}
	return cr, cr.kind != noCredential
}

// identify resolves the request's credential into an Identity, or returns
// the denial. auth: none services are anonymous whatever was sent.
func (c *Checker) identify(ctx context.Context, req *Request, svc *Service) (Identity, credential, *Decision, error) {
	cr, present := c.findCredential(req)
	if svc.Auth == AuthNone {
		return Identity{}, credential{sessionPresent: cr.sessionPresent}, nil, nil
	}
	if !present {
		if svc.Auth == AuthOptional {
			return Identity{}, cr, nil, nil
		}
		d := c.deny(req, svc, reason.CredentialMissing, 401, challenge(reason.OK))
		return Identity{}, cr, &d, nil
	}
	if cr.kind == sessionCredential {
		return c.identifySession(ctx, req, svc, cr)
	}
	return c.identifyBearer(ctx, req, svc, cr)
}

func (c *Checker) identifyBearer(ctx context.Context, req *Request, svc *Service, cr credential) (Identity, credential, *Decision, error) {
	deny := func(code reason.Code, detail error) (Identity, credential, *Decision, error) {
		d := c.deny(req, svc, code, 401, challenge(code))
		d.detail = detail
		return Identity{}, cr, &d, nil
	}
	switch {
	case cr.raw == "":
		return deny(reason.TokenMalformed, nil)
	case len(cr.raw) > c.maxToken:
		return deny(reason.TokenTooLarge, nil)
	case c.verifier == nil:
		return deny(reason.TokenIssuer, nil)
	}
	tok, err := c.verifier.Verify(ctx, cr.raw)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Identity{}, cr, nil, ctxErr
		}
		switch code := reason.Of(err); code {
		case reason.Internal:
			return Identity{}, cr, nil, err
		case reason.JWKSUnavailable:
			d := c.unavailable(req, svc, code)
			d.detail = err
			return Identity{}, cr, &d, nil
		default:
			return deny(code, err)
		}
	}
	id := Identity{Type: JWT, Issuer: tok.Issuer, Subject: tok.Subject, Audiences: tok.Audience, Claims: tok.Claims, key: tok.HashKey()}
	if len(svc.Audiences) > 0 {
		code := reason.OK
		if len(tok.Audience) == 0 {
			code = reason.TokenMissingAud
		} else if !tok.HasAudience(svc.Audiences) {
			code = reason.TokenAudience
		}
		if code != reason.OK {
			d := c.deny(req, svc, code, 401, challenge(code))
			d.Identity.Issuer = tok.Issuer // for the log line only
			return Identity{}, cr, &d, nil
		}
	}
	return id, cr, nil, nil
}

func (c *Checker) identifySession(ctx context.Context, req *Request, svc *Service, cr credential) (Identity, credential, *Decision, error) {
	rec, err := c.sessions.Lookup(ctx, cr.raw)
	if err == nil {
		return Identity{Type: Session, Subject: rec.Subject, Claims: rec.Claims, key: rec.IDHash}, cr, nil, nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return Identity{}, cr, nil, ctxErr
	}
	switch code := reason.Of(err); code {
	case reason.SessionMalformed, reason.SessionNotFound, reason.SessionExpired:
		d := c.deny(req, svc, code, 401, challenge(code))
		d.detail = err
		return Identity{}, cr, &d, nil
	case reason.SessionStoreUnavailable:
		if c.sessionCfg.AnonymousOnStoreError {
			c.log.LogAttrs(ctx, slog.LevelWarn, "session store unavailable: treating the request as anonymous",
				slog.String("service", svc.Name), slog.String("request_id", req.ID), slog.String("error", err.Error()))
			if svc.Auth == AuthOptional {
				return Identity{}, cr, nil, nil
			}
			d := c.deny(req, svc, reason.CredentialMissing, 401, challenge(reason.OK))
			d.detail = err
			return Identity{}, cr, &d, nil
		}
		d := c.unavailable(req, svc, code)
		d.detail = err
		return Identity{}, cr, &d, nil
	default:
		return Identity{}, cr, nil, err
	}
}

// challenge is the WWW-Authenticate value for a 401 with code (reason.OK:
// no credential was sent, so no error attribute, per RFC 6750 §3.1).
func challenge(code reason.Code) string {
	if code == reason.OK || code == reason.CredentialMissing {
		return `Bearer realm="tollgate"`
	}
	return `Bearer realm="tollgate", error="invalid_token", error_description="` + code.Description() + `"`
}

func (k credentialKind) String() string {
	switch k {
	case bearerCredential:
		return "bearer"
	case sessionCredential:
		return "session"
	default:
		return "none"
	}
}

// hash is the credential's tag for logs: for a session the prefix of the
// ID hash the store and its admin API log, so the lines can be joined; for
// a token the prefix of its SHA-256.
func (cr credential) hash() string {
	if cr.kind == sessionCredential {
		if h, err := session.IDHash(cr.raw); err == nil {
			return h[:12]
		}
	}
	return TokenHash(cr.raw)
}
