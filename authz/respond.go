package authz

import (
	"context"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// respond builds the allowing Decision: policy headers first, then the
// identity headers and the internal token, which win over a policy header
// of the same name; the outside credential and every identity header the
// client could have forged are removed.
func (c *Checker) respond(ctx context.Context, req *Request, svc *Service, id *Identity, cr credential, pol *policy.Result) (Decision, error) {
	d := Decision{Allowed: true, Status: 200, Reason: reason.OK, Service: svc.Name, Identity: *id}

	var internal string
	if c.minter != nil && id.Type != Anonymous && (id.Type == Session || c.mintCfg.ForJWT) {
		tok, err := c.minter.Mint(ctx, keyring.MintRequest{
			CacheKey: id.key,
			Subject:  id.Subject,
			Audience: svc.InternalAudience,
			Claims:   id.Claims,
		})
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return Decision{}, ctxErr
			}
			// Services behind Tollgate rely on the internal token;
			// never let a request through without it.
			dd := c.unavailable(req, svc, reason.SigningUnavailable)
			dd.detail = err
			return dd, nil
		}
		internal = tok
	}

	n := len(c.claimHeaders) + 2
	if pol != nil {
		n += len(pol.Headers)
	}
	d.Upstream = make([]Header, 0, n)
	if pol != nil {
		for _, h := range pol.Headers {
			// Header names are case-insensitive: "X-User-Id" from a
			// policy must not slip past the reserved "x-user-id".
			k := lowerASCII(h.Key)
			if !c.reserved[k] {
				d.Upstream = append(d.Upstream, Header{Key: k, Value: sanitize(h.Value)})
			}
		}
	}

	// Removals: the credential and forgeable identity headers. The
	// precomputed lists are shared, clipped so that an append copies
	// rather than writes into them; the common case allocates nothing.
	var remove []string
	if id.Type == Anonymous {
		remove = slices.Clip(c.anonRemove)
	} else {
		remove = slices.Clip(c.removeHeaders)
	}
	for _, ch := range c.claimHeaders {
		if id.Type == Anonymous {
			break // all in anonRemove
		}
		if v, ok := claimValue(claimOf(id, ch.Claim)); ok {
			d.Upstream = append(d.Upstream, Header{Key: ch.Header, Value: v})
		} else {
			// A claim the identity lacks must not let a client-sent
			// header of the same name through.
			remove = append(remove, ch.Header)
		}
	}
	if c.minter != nil {
		switch {
		case internal != "":
			d.Upstream = append(d.Upstream, Header{Key: c.mintCfg.Header, Value: internal})
		case id.Type != Anonymous: // anonRemove has it already
			remove = append(remove, c.mintCfg.Header)
		}
	}
	if c.sessions != nil {
		remove, d.Upstream = c.stripSession(req, cr, remove, d.Upstream)
	}
	if pol != nil {
		for _, h := range pol.RequestHeadersToRemove {
			if k := lowerASCII(h); !c.reserved[k] {
				remove = append(remove, k)
			}
		}
		for _, h := range pol.ResponseHeadersToAdd {
			d.Response = append(d.Response, Header{Key: h.Key, Value: sanitize(h.Value)})
		}
		for _, q := range pol.QueryParametersToSet {
			d.QuerySet = append(d.QuerySet, Header{Key: q.Key, Value: q.Value})
		}
		d.QueryRemove = pol.QueryParametersToRemove
		d.DynamicMetadata = pol.DynamicMetadata
	}
	d.Remove = remove
	return d, nil
}

// stripSession removes the session header and rewrites Cookie so that only
// the session cookie goes; every other cookie reaches the service as sent.
func (c *Checker) stripSession(req *Request, cr credential, remove []string, set []Header) ([]string, []Header) {
	if !cr.sessionPresent {
		return remove, set
	}
	if c.sessionCfg.Header != "" {
		if _, ok := req.Headers[c.sessionCfg.Header]; ok {
			remove = append(remove, c.sessionCfg.Header)
		}
	}
	if c.sessionCfg.Cookie != "" {
		if ck, ok := req.Headers["cookie"]; ok {
			if rest, had := session.StripCookie(ck, c.sessionCfg.Cookie); had {
				if rest == "" {
					remove = append(remove, "cookie")
				} else {
					set = append(set, Header{Key: "cookie", Value: rest})
				}
			}
		}
	}
	return remove, set
}

// claimOf returns the named claim of id; "sub" is the subject for every
// identity type (a session record keeps it outside its claims).
func claimOf(id *Identity, name string) any {
	if name == "sub" && id.Subject != "" {
		return id.Subject
	}
	return id.Claims[name]
}

// deny builds a denial with the fixed description of code.
func (c *Checker) deny(req *Request, svc *Service, code reason.Code, status int, challenge string) Decision {
	d := Decision{Status: status, Reason: code, Body: denyBody(code, req.ID)}
	if svc != nil {
		d.Service = svc.Name
	}
	if challenge != "" {
		d.Response = []Header{{Key: "www-authenticate", Value: challenge}}
	}
	return d
}

// unavailable is a 503 for a dependency that is down (keys, sessions,
// signing): the client may retry.
func (c *Checker) unavailable(req *Request, svc *Service, code reason.Code) Decision {
	d := c.deny(req, svc, code, 503, "")
	d.Response = append(d.Response, Header{Key: "retry-after", Value: "5"})
	return d
}

// lowerASCII lower-cases a header name, allocating only when it has upper
// case letters.
func lowerASCII(s string) string {
	if !hasUpper(s) {
		return s
	}
	return strings.ToLower(s)
}
