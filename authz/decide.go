package authz

import (
	"context"
	"errors"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/policy"
)

// decide evaluates the policy. It returns the allowing result, or the
// denial. An undefined result denies; an evaluation error or timeout denies
// with 500 and never allows.
func (c *Checker) decide(ctx context.Context, req *Request, svc *Service, id *Identity) (policy.Result, *Decision, error) {
	in := policy.Input{
		Check:     req.Check,
		RequestID: req.ID,
		Identity: policy.Identity{
			Type:      id.Type.String(),
			Issuer:    id.Issuer,
			Subject:   id.Subject,
			Claims:    id.Claims,
			Audiences: id.Audiences,
		},
		Service: policy.Service{Name: svc.Name, Audiences: svc.Audiences},
	}
	res, err := c.policy.Eval(ctx, &in)
	if err != nil {
		// The caller's own deadline or cancellation is not a policy
		// failure; policy.timeout is (the engine reports it as such).
		if ctxErr := ctx.Err(); ctxErr != nil {
			return res, nil, ctxErr
		}
		code := reason.Of(err)
		if code != reason.PolicyTimeout {
			code = reason.PolicyError
		}
		d := c.deny(req, svc, code, 500, "")
		d.detail = err
		return res, &d, nil
	}
	if res.Allowed {
		return res, nil, nil
	}
	var d Decision
	switch {
	case res.HTTPStatus != 0:
		d = c.deny(req, svc, reason.PolicyDenied, res.HTTPStatus, "")
	case id.Type == Anonymous && svc.Auth == AuthOptional:
		// Anonymous access was refused: asking for a credential is the
		// useful answer.
		d = c.deny(req, svc, reason.CredentialMissing, 401, challenge(reason.OK))
	default:
		d = c.deny(req, svc, reason.PolicyDenied, 403, "")
	}
	if !res.Defined {
		d.detail = errUndefined
	}
	if res.Body != "" {
		d.Body = res.Body
	}
	// OPA-Envoy semantics: on a denial, "headers" go to the client.
	for _, h := range res.Headers {
		d.Response = append(d.Response, Header{Key: h.Key, Value: h.Value})
	}
	for _, h := range res.ResponseHeadersToAdd {
		d.Response = append(d.Response, Header{Key: h.Key, Value: h.Value})
	}
	d.Identity.Issuer = id.Issuer
	d.Identity.Subject = id.Subject
	d.DynamicMetadata = res.DynamicMetadata
	return res, &d, nil
}

var errUndefined = errors.New("policy decision undefined")
