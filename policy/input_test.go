package policy

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pluginInput is a reference implementation of the OPA-Envoy plugin's
// input document (envoyauth.RequestToInput followed by
// ast.InterfaceToValue), written the plugin's slow way: reflection into
// map[string]any, then the generic conversion. buildInput must produce
// the same value.
func pluginInput(t testing.TB, req *authv3.CheckRequest) ast.Value {
	t.Helper()
	in := reflectMap(req.ProtoReflect())
	in["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	h := req.GetAttributes().GetRequest().GetHttp()
	rawPath, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	in["parsed_path"] = strings.Split(strings.TrimLeft(p, "/"), "/")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		t.Fatal(err)
	}
	pq := map[string]any{}
	for k, v := range q {
		pq[k] = v
	}
	in["parsed_query"] = pq
	var body any
	if strings.Contains(h.GetHeaders()["content-type"], "application/json") && h.GetBody() != "" {
		if err := util.UnmarshalJSON([]byte(h.GetBody()), &body); err != nil {
			t.Fatal(err)
		}
	}
	in["parsed_body"] = body
	in["truncated_body"] = false
	if sp := req.GetAttributes().GetSource().GetPrincipal(); sp != "" {
		in["source_principal"] = sp
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func reflectMap(m protoreflect.Message) map[string]any {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return s.AsMap()
	}
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mm := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					mm[k.String()] = reflectMap(mv.Message())
				} else {
					mm[k.String()] = mv.Interface()
				}
				return true
			})
			out[fd.JSONName()] = mm
		case fd.IsList():
			l := make([]any, v.List().Len())
			for i := range l {
				if fd.Kind() == protoreflect.MessageKind {
					l[i] = reflectMap(v.List().Get(i).Message())
				} else {
					l[i] = v.List().Get(i).Interface()
				}
			}
			out[fd.JSONName()] = l
		case fd.Kind() == protoreflect.MessageKind:
			out[fd.JSONName()] = reflectMap(v.Message())
		default:
			out[fd.JSONName()] = v.Interface()
		}
		return true
	})
	return out
}

// without returns obj without the given keys.
func without(v ast.Value, keys ...string) ast.Value {
	o := v.(ast.Object)
	out := ast.NewObject()
	o.Foreach(func(k, v *ast.Term) {
		for _, x := range keys {
			if k.Value.Compare(ast.String(x)) == 0 {
				return
			}
		}
		out.Insert(k, v)
	})
	return out
}

// Tollgate's input document equals the OPA-Envoy plugin's for the same
// CheckRequest (plus identity and service), field names and number
// representations included.
func TestInputMatchesPlugin(t *testing.T) {
	t.Parallel()
	full := envoyRequest("POST", "/api/v1/orders%20new/?a=1&a=2&b=", map[string]string{
		"content-type": "application/json", "authorization": "Bearer x",
	})
	full.Attributes.Request.Http.Body = `{"qty": 3, "price": 1.25, "tags": ["a"], "nested": {"ok": true, "none": null}}`
	full.Attributes.Request.Http.RawBody = []byte{0, 1, 2, 250}
	full.Attributes.Request.Http.Size = 1 << 40
	full.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-raw", RawValue: []byte("raw-value")}, {Key: "x-plain", Value: "v"},
	}}
	full.Attributes.Source.Principal = "spiffe://a/b"
	full.Attributes.Source.Labels = map[string]string{"app": "web"}
	full.Attributes.Source.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	full.Attributes.ContextExtensions = map[string]string{"k": "v"}
	md, _ := structpb.NewStruct(map[string]any{"n": 1.5, "big": 1e21, "l": []any{"x", 2.0, false, nil}, "o": map[string]any{"p": "q"}})
	full.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": md}}
	full.Attributes.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"r": md}}
	full.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "orders.example.com"}
	full.Attributes.Source.Service = "web"
	full.Attributes.Source.Certificate = "-----BEGIN CERTIFICATE-----"
	full.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "::1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "https"}, ResolverName: "r",
		Ipv4Compat: true, NetworkNamespaceFilepath: "/ns",
	}}}
	full.Attributes.Request.Time.Nanos = 123
	full.Attributes.Request.Http.Query = "a=1"
	full.Attributes.Request.Http.Fragment = "f"
	pipe := envoyRequest("GET", "/", nil)
	pipe.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}}
	pipe.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 0}

	tests := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"golden Envoy request", golden(t, "checkrequest.json")},
		{"typical request", envoyRequest("GET", "/api/orders/42", nil)},
		{"every field populated", full},
		{"root path", envoyRequest("GET", "/", nil)},
		{"pipe address and port 0", pipe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := buildInput(&Input{Check: tt.req}, false)
			if err != nil {
				t.Fatal(err)
			}
			want := pluginInput(t, tt.req)
			got = without(got, "identity", "service")
			if got.Compare(want) != 0 {
				t.Errorf("buildInput =\n%v\nwant (plugin)\n%v", got, want)
			}
		})
	}
}

// Credential headers are redacted in input.attributes unless exposed, in
// the header map and in the raw header_map alike.
func TestInputRedactsCredentials(t *testing.T) {
	t.Parallel()
	req := golden(t, "checkrequest.json")
	req.Attributes.Request.Http.Headers["x-session-id"] = "sess-123"
	req.Attributes.Request.Http.Headers["proxy-authorization"] = "Basic dTpw"
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "authorization", RawValue: []byte("Bearer raw-secret")},
		{Key: "cookie", Value: "tg_session=plain-secret"},
	}}
	secrets := []string{"eyJhbGciOiJFUzI1NiJ9", "s3cr3t-session-id", "sess-123", "dTpw",
		"QmVhcmVyIHJhdy1zZWNyZXQ=", "plain-secret"}
	for _, expose := range []bool{false, true} {
		v, err := buildInput(&Input{Check: req}, !expose)
		if err != nil {
			t.Fatal(err)
		}
		doc := v.String()
		for _, s := range secrets {
			if strings.Contains(doc, s) == !expose {
				t.Errorf("expose=%v: input contains %q = %v; want %v", expose, s, !expose, expose)
			}
		}
		if got := strings.Contains(doc, Redacted); got == expose {
			t.Errorf("expose=%v: input shows %s = %v", expose, Redacted, got)
		}
	}
	hs := v(t, req, true).(ast.Object)
	auth, err := hs.Find(ast.MustParseRef(`x.attributes.request.http.headers.authorization`)[1:])
	if err != nil || auth.Compare(ast.String(Redacted)) != 0 {
		t.Errorf("headers.authorization = %v, %v; want %q", auth, err, Redacted)
	}
}

func v(t *testing.T, req *authv3.CheckRequest, redact bool) ast.Value {
	t.Helper()
	x, err := buildInput(&Input{Check: req}, redact)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// input.identity and input.service have a fixed shape; claims keep their
// JSON types; anonymous callers get empty values, not missing keys.
func TestInputIdentityAndService(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"jwt identity with claims", Input{
			Identity: jwtIdentity("alice", `{"roles":["a","b"],"exp":1900000000,"ratio":0.5,"email_verified":true,"addr":{"country":"NL"},"nothing":null}`),
			Service:  Service{Name: "orders", Audiences: []string{"orders-api"}},
		}, `{"identity": {"type": "jwt", "issuer": "https://idp.example.com", "subject": "alice",
			"claims": {"roles": ["a", "b"], "exp": 1900000000, "ratio": 0.5, "email_verified": true, "addr": {"country": "NL"}, "nothing": null},
			"audiences": ["orders-api"]}, "service": {"name": "orders", "audiences": ["orders-api"]}}`},
		{"anonymous", Input{}, `{"identity": {"type": "anonymous", "issuer": "", "subject": "", "claims": {}, "audiences": []},
			"service": {"name": "", "audiences": []}}`},
		{"session", Input{Identity: Identity{Type: IdentitySession, Subject: "s", Claims: map[string]any{"n": json.Number("7")}}},
			`{"identity": {"type": "session", "issuer": "", "subject": "s", "claims": {"n": 7}, "audiences": []}, "service": {"name": "", "audiences": []}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := buildInput(&tt.in, true)
			if err != nil {
				t.Fatal(err)
			}
			want := ast.MustParseTerm(tt.want).Value.(ast.Object)
			o := got.(ast.Object)
			for _, k := range []string{"identity", "service"} {
				if g, w := o.Get(ast.StringTerm(k)), want.Get(ast.StringTerm(k)); g == nil || g.Value.Compare(w.Value) != 0 {
					t.Errorf("input.%s = %v; want %v", k, g, w)
				}
			}
		})
	}
}

// Requests the plugin cannot represent are denied with 400 without
// evaluating; bodies are parsed as the plugin parses them.
func TestInputParsedBodyAndBadRequests(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, `package tollgate.authz
allow := {"allowed": true, "headers": {"x-body": json.marshal(input.parsed_body), "x-trunc": json.marshal(input.truncated_body)}}
`)
	e := newEngine(t, Config{Paths: []string{dir}})
	req := func(path, ct, body string, extra map[string]string) *authv3.CheckRequest {
		h := map[string]string{}
		if ct != "" {
			h["content-type"] = ct
		}
		for k, v := range extra {
			h[k] = v
		}
		r := envoyRequest("POST", path, h)
		r.Attributes.Request.Http.Body = body
		return r
	}
	tests := []struct {
		name      string
		check     *authv3.CheckRequest
		body      string
		truncated string
		status    int
	}{
		{"JSON body parsed", req("/", "application/json; charset=utf-8", `{"a":[1,"x"]}`, nil), `{"a":[1,"x"]}`, "false", 0},
		{"form body parsed", req("/", "application/x-www-form-urlencoded", "a=1&a=2&b=3", nil), `{"a":["1","2"],"b":["3"]}`, "false", 0},
		{"multipart body parsed", req("/", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--XX--\r\n", nil), `{"f":["v"]}`, "false", 0},
		{"text body not parsed", req("/", "text/plain", "hello", nil), "null", "false", 0},
		{"body shorter than content-length is truncated", req("/", "application/json", `{"a":`, map[string]string{"content-length": "100"}), "null", "true", 0},
		{"partial-body header means truncated", req("/", "application/json", `{}`, map[string]string{"x-envoy-auth-partial-body": "true"}), "null", "true", 0},
		{"bad JSON body → 400", req("/", "application/json", `{"a":`, nil), "", "", 400},
		{"bad path escape → 400", req("/a%zz", "", "", nil), "", "", 400},
		{"bad query escape → 400", req("/a?x=%zz", "", "", nil), "", "", 400},
		{"bad content-length → 400", req("/", "application/json", "{}", map[string]string{"content-length": "x"}), "", "", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := e.Eval(t.Context(), &Input{Check: tt.check})
			if err != nil {
				t.Fatalf("Eval = %v", err)
			}
			if tt.status != 0 {
				if res.Allowed || res.HTTPStatus != tt.status || res.Defined {
					t.Errorf("Eval = %+v; want undefined deny with status %d", res, tt.status)
				}
				return
			}
			want := []Header{{"x-body", tt.body}, {"x-trunc", tt.truncated}}
			if !res.Allowed || len(res.Headers) != 2 || res.Headers[0] != want[0] || res.Headers[1] != want[1] {
				t.Errorf("Eval headers = %v; want %v", res.Headers, want)
			}
		})
	}
}

// The typed fast paths of envoyinput cover every field of the messages
// they convert; a go-control-plane upgrade that adds one must extend them.
func TestFastPathsKnowEveryField(t *testing.T) {
	t.Parallel()
	known := map[protoreflect.FullName][]string{
		"envoy.service.auth.v3.AttributeContext": {"source", "destination", "request", "context_extensions",
			"metadata_context", "route_metadata_context", "tls_session"},
		"envoy.service.auth.v3.AttributeContext.Peer":    {"address", "service", "labels", "principal", "certificate"},
		"envoy.service.auth.v3.AttributeContext.Request": {"time", "http"},
		"envoy.service.auth.v3.AttributeContext.HttpRequest": {"id", "method", "headers", "header_map", "path", "host",
			"scheme", "query", "fragment", "size", "protocol", "body", "raw_body"},
		"envoy.config.core.v3.SocketAddress": {"protocol", "address", "port_value", "named_port", "resolver_name",
			"ipv4_compat", "network_namespace_filepath"},
		"google.protobuf.Timestamp": {"seconds", "nanos"},
	}
	msgs := []protoreflect.MessageDescriptor{
		(&authv3.AttributeContext{}).ProtoReflect().Descriptor(),
		(&authv3.AttributeContext_Peer{}).ProtoReflect().Descriptor(),
		(&authv3.AttributeContext_Request{}).ProtoReflect().Descriptor(),
		(&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor(),
		(&corev3.SocketAddress{}).ProtoReflect().Descriptor(),
		(&timestamppb.Timestamp{}).ProtoReflect().Descriptor(),
	}
	for _, md := range msgs {
		var got []string
		for i := range md.Fields().Len() {
			got = append(got, string(md.Fields().Get(i).Name()))
		}
		want := known[md.FullName()]
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("%s fields = %v; the fast path knows %v", md.FullName(), got, want)
		}
	}
}
