package policy

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policy/internal/envoyinput"
)

// Redacted is what input.attributes shows instead of a credential header's
// value unless Config.ExposeCredentials is set.
const Redacted = envoyinput.Redacted

// Identity types.
const (
	IdentityJWT       = "jwt"
	IdentitySession   = "session"
	IdentityAnonymous = "anonymous"
)

// Input is one decision's input. Eval reads it and keeps nothing of it.
type Input struct {
	// Check is the request as Envoy sent it; nil for front doors that have
	// none, in which case input.attributes is an empty object.
	Check *authv3.CheckRequest
	// Identity is the verified caller.
	Identity Identity
	// Service is the service the request was routed to.
	Service Service
	// RequestID is recorded in the decision log.
	RequestID string
}

// Identity is the verified caller as policies see it in input.identity.
// It never holds the raw credential.
type Identity struct {
	// Type is jwt, session or anonymous ("" means anonymous).
	Type    string `json:"type"`
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	// Claims are the verified claims as JSON decodes them (json.Number or
	// float64 numbers, []any, map[string]any). The map is handed to OPA as
	// is and only read, so concurrent Evals may share it; it must not be
	// modified while an Eval runs. nil shows as {}.
	Claims map[string]any `json:"claims"`
	// Audiences of the credential; nil shows as [].
	Audiences []string `json:"audiences"`
}

// Service is the routed service as policies see it in input.service.
type Service struct {
	Name      string   `json:"name"`
	Audiences []string `json:"audiences"`
}

// buildInput builds the whole input document:
//
//	attributes, parsed_path, parsed_query, parsed_body, truncated_body,
//	version, source_principal (when set)   — as the OPA-Envoy plugin
//	identity {type, issuer, subject, claims, audiences}, service {name, audiences}
//
// as an ast.LazyObject over plain Go values: OPA converts a member to AST
// the first time the policy reads it, so a policy pays for the parts of
// the request it looks at, not for every header and address. The claims
// map is handed over as is (it is read, never modified). An error wraps
// envoyinput.ErrRequest.
func buildInput(in *Input, redact bool) (ast.Value, error) {
	req := in.Check
	h := req.GetAttributes().GetRequest().GetHttp()
	parsedPath, parsedQuery, err := envoyinput.PathAndQuery(h.GetPath())
	if err != nil {
		return nil, err
	}
	body, truncated, err := envoyinput.Body(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	if err != nil {
		return nil, err
	}
	doc := make(map[string]any, 10)
	doc["attributes"] = envoyinput.Attributes(req.GetAttributes(), redact)
	doc["parsed_path"] = parsedPath
	doc["parsed_query"] = parsedQuery
	doc["parsed_body"] = body
	doc["truncated_body"] = truncated
	doc["version"] = envoyinput.Version()
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		doc["source_principal"] = p
	}
	doc["identity"] = identityDoc(&in.Identity)
	doc["service"] = map[string]any{"name": in.Service.Name, "audiences": nonNil(in.Service.Audiences)}
	return ast.LazyObject(doc), nil
}

func identityDoc(id *Identity) map[string]any {
	typ := id.Type
	if typ == "" {
		typ = IdentityAnonymous
	}
	var claims any = id.Claims
	if id.Claims == nil {
		claims = map[string]any{}
	}
	return map[string]any{
		"type":      typ,
		"issuer":    id.Issuer,
		"subject":   id.Subject,
		"claims":    claims,
		"audiences": nonNil(id.Audiences),
	}
}

// nonNil makes a missing list an empty array rather than null.
func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}
