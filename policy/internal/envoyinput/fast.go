package envoyinput

import (
	"encoding/base64"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Typed conversions of the messages every request carries: the same
// result as the reflective walker (proto3 presence: zero scalars and nil
// messages are left out), without protoreflect's per-field cost. Messages
// they do not cover go through the walker. TestFastPathsKnowEveryField
// fails when go-control-plane adds a field to one of them.

func (w *walker) attributes(ac *authv3.AttributeContext) map[string]any {
	out := make(map[string]any, 4)
	if ac.Source != nil {
		out["source"] = w.peer(ac.Source)
	}
	if ac.Destination != nil {
		out["destination"] = w.peer(ac.Destination)
	}
	if ac.Request != nil {
		out["request"] = w.request(ac.Request)
	}
	if len(ac.ContextExtensions) > 0 {
		out["contextExtensions"] = ac.ContextExtensions
	}
	if ac.MetadataContext != nil {
		out["metadataContext"] = w.message(ac.MetadataContext.ProtoReflect())
	}
	if ac.RouteMetadataContext != nil {
		out["routeMetadataContext"] = w.message(ac.RouteMetadataContext.ProtoReflect())
	}
	if ac.TlsSession != nil {
		out["tlsSession"] = w.message(ac.TlsSession.ProtoReflect())
	}
	return out
}

func (w *walker) peer(p *authv3.AttributeContext_Peer) map[string]any {
	out := make(map[string]any, 2)
	if p.Address != nil {
		out["address"] = w.address(p.Address)
	}
	if p.Service != "" {
		out["service"] = p.Service
	}
	if len(p.Labels) > 0 {
		out["labels"] = p.Labels
	}
	if p.Principal != "" {
		out["principal"] = p.Principal
	}
	if p.Certificate != "" {
		out["certificate"] = p.Certificate
	}
	return out
}

func (w *walker) address(a *corev3.Address) map[string]any {
	sa, ok := a.Address.(*corev3.Address_SocketAddress)
	if !ok || sa.SocketAddress == nil {
		return w.message(a.ProtoReflect())
	}
	s := sa.SocketAddress
	out := make(map[string]any, 2)
	if s.Protocol != 0 {
		out["protocol"] = int64(s.Protocol)
	}
	if s.Address != "" {
		out["address"] = s.Address
	}
	switch p := s.PortSpecifier.(type) {
	case *corev3.SocketAddress_PortValue:
		out["portValue"] = uint64(p.PortValue) // set in a oneof: kept even if 0
	case *corev3.SocketAddress_NamedPort:
		out["namedPort"] = p.NamedPort
	}
	if s.ResolverName != "" {
		out["resolverName"] = s.ResolverName
	}
	if s.Ipv4Compat {
		out["ipv4Compat"] = true
	}
	if s.NetworkNamespaceFilepath != "" {
		out["networkNamespaceFilepath"] = s.NetworkNamespaceFilepath
	}
	return map[string]any{"socketAddress": out}
}

func (w *walker) request(r *authv3.AttributeContext_Request) map[string]any {
	out := make(map[string]any, 2)
	if r.Time != nil {
		out["time"] = timestamp(r.Time)
	}
	if r.Http != nil {
		out["http"] = w.http(r.Http)
	}
	return out
}

func timestamp(t *timestamppb.Timestamp) map[string]any {
	out := make(map[string]any, 2)
	if t.Seconds != 0 {
		out["seconds"] = t.Seconds
	}
	if t.Nanos != 0 {
		out["nanos"] = int64(t.Nanos)
	}
	return out
}

func (w *walker) http(h *authv3.AttributeContext_HttpRequest) map[string]any {
	out := make(map[string]any, 8)
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("id", h.Id)
	set("method", h.Method)
	if len(h.Headers) > 0 {
		out["headers"] = w.headers(h.Headers)
	}
	if h.HeaderMap != nil {
		out["headerMap"] = w.message(h.HeaderMap.ProtoReflect())
	}
	set("path", h.Path)
	set("host", h.Host)
	set("scheme", h.Scheme)
	set("query", h.Query)
	set("fragment", h.Fragment)
	if h.Size != 0 {
		out["size"] = h.Size
	}
	set("protocol", h.Protocol)
	set("body", h.Body)
	if len(h.RawBody) > 0 {
		out["rawBody"] = base64.StdEncoding.EncodeToString(h.RawBody)
	}
	return out
}

// HTTPField returns what Attributes holds at request.http.<name>.<rest...>
// without converting the rest of the request: the decision cache reads a
// few fields of every request. ok is false where Attributes has nothing.
// TestHTTPFieldMatchesAttributes keeps the two in step.
func HTTPField(ac *authv3.AttributeContext, redact bool, name string, rest []string) (v any, ok bool) {
	h := ac.GetRequest().GetHttp()
	if h == nil {
		return nil, false
	}
	str := func(s string) (any, bool) {
		if s == "" || len(rest) > 0 {
			return nil, false
		}
		return s, true
	}
	switch name {
	case "id":
		return str(h.Id)
	case "method":
		return str(h.Method)
	case "path":
		return str(h.Path)
	case "host":
		return str(h.Host)
	case "scheme":
		return str(h.Scheme)
	case "query":
		return str(h.Query)
	case "fragment":
		return str(h.Fragment)
	case "protocol":
		return str(h.Protocol)
	case "body":
		return str(h.Body)
	case "headers":
		if len(h.Headers) == 0 {
			return nil, false
		}
		if len(rest) == 0 {
			w := walker{redact: redact}
			return w.headers(h.Headers), true
		}
		hv, found := h.Headers[rest[0]]
		if !found || len(rest) > 1 {
			return nil, false
		}
		if redact && Sensitive(rest[0]) {
			hv = Redacted
		}
		return hv, true
	}
	w := walker{redact: redact}
	return Lookup(w.http(h), name, rest)
}

// Lookup follows name and rest through a converted document.
func Lookup(doc map[string]any, name string, rest []string) (any, bool) {
	v, ok := doc[name]
	for _, k := range rest {
		if !ok {
			return nil, false
		}
		switch m := v.(type) {
		case map[string]any:
			v, ok = m[k]
		case map[string]string:
			v, ok = m[k]
		default:
			return nil, false
		}
	}
	return v, ok
}
