// Package envoyinput builds the OPA-Envoy plugin's input document for an
// Envoy CheckRequest as plain Go values (map[string]any, string, int64,
// float64, json.Number, bool, []any, []string, map[string]string), the
// form ast.LazyObject converts to AST on demand: a policy pays only for
// the parts of the request it reads.
//
// Invariant: once converted, the document equals (ast.Compare) the one
// the plugin builds (envoyauth.RequestToInput, then ast.InterfaceToValue):
// protojson field names (metadataContext, socketAddress, …), zero values
// omitted, int64 as numbers, enums as their numbers, bytes as base64
// strings, google.protobuf.Struct as a plain object. The only intended
// difference is redaction, which the caller asks for explicitly.
//
// Nothing here is modified after it is returned, and maps that come from
// the request (the header map) are handed over, not copied, unless a value
// must be redacted: OPA only reads its input.
package envoyinput

import (
	"encoding/base64"
	"encoding/json"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Redacted replaces the value of a credential header when redaction is on.
const Redacted = "[REDACTED]"

var redactedRaw = base64.StdEncoding.EncodeToString([]byte(Redacted))

// Sensitive reports whether a header (lower-case name, as Envoy sends it)
// carries a credential: the bearer token, the session cookie or id.
func Sensitive(name string) bool {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "x-session-id":
		return true
	}
	return false
}

var headerValueDesc = (&corev3.HeaderValue{}).ProtoReflect().Descriptor()

// Attributes converts a CheckRequest's AttributeContext the way the
// plugin's protomap does. With redact, credential headers (see Sensitive)
// in request.http.headers and request.http.header_map read Redacted.
func Attributes(ac *authv3.AttributeContext, redact bool) map[string]any {
	if ac == nil {
		return map[string]any{}
	}
	w := walker{redact: redact}
	return w.attributes(ac)
}

type walker struct{ redact bool }

func (w *walker) message(m protoreflect.Message) map[string]any {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		// protomap uses AsMap for Struct, so its numbers are float64.
		return s.AsMap()
	}
	fields := m.Descriptor().Fields()
	out := make(map[string]any, 4)
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		out[fd.JSONName()] = w.field(m, fd)
	}
	if w.redact && m.Descriptor() == headerValueDesc {
		if hv := m.Interface().(*corev3.HeaderValue); Sensitive(hv.GetKey()) {
			if _, ok := out["value"]; ok {
				out["value"] = Redacted
			}
			if _, ok := out["rawValue"]; ok {
				out["rawValue"] = redactedRaw
			}
		}
	}
	return out
}

func (w *walker) field(m protoreflect.Message, fd protoreflect.FieldDescriptor) any {
	v := m.Get(fd)
	switch {
	case fd.IsMap():
		if h, ok := m.Interface().(*authv3.AttributeContext_HttpRequest); ok && fd.Number() == 3 {
			return w.headers(h.GetHeaders())
		}
		kd, vd := fd.MapKey(), fd.MapValue()
		if kd.Kind() == protoreflect.StringKind && vd.Kind() == protoreflect.StringKind {
			out := make(map[string]string, v.Map().Len())
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				out[k.String()] = mv.String()
				return true
			})
			return out
		}
		out := make(map[string]any, v.Map().Len())
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			out[k.String()] = w.value(vd, mv)
			return true
		})
		return out
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range out {
			out[i] = w.value(fd, l.Get(i))
		}
		return out
	}
	return w.value(fd, v)
}

func (w *walker) value(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return w.message(v.Message())
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.EnumKind:
		return int64(v.Enum())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return v.Int()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	case protoreflect.FloatKind:
		// The plugin's float32 goes through encoding/json.
		bs, err := json.Marshal(float32(v.Float()))
		if err != nil {
			return nil
		}
		return json.Number(bs)
	case protoreflect.DoubleKind:
		return v.Float()
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	}
	return nil
}

// headers returns hs itself when nothing needs redacting, else a copy
// with credential values replaced.
func (w *walker) headers(hs map[string]string) map[string]string {
	if !w.redact {
		return hs
	}
	found := false
	for k := range hs {
		if Sensitive(k) {
			found = true
			break
		}
	}
	if !found {
		return hs
	}
	out := make(map[string]string, len(hs))
	for k, v := range hs {
		if Sensitive(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}
