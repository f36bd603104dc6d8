package policy

import (
	"encoding/binary"
	"encoding/json"
	"maps"
	"math"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policy/internal/envoyinput"
)

// maxKeyBytes bounds a decision-cache key. A policy that reads, say, every
// header makes long keys that rarely repeat: past this size the request is
// evaluated without the cache.
const maxKeyBytes = 2048

// absent marks a path the input document does not have.
var absent = new(struct{ _ byte })

// lookupAll appends to vals the value the input document that buildInput
// would build holds at each of paths (absent where it has none), without
// building that document. ok is false when the request cannot be
// represented as input: a bad escape in the path or query, or a body that
// does not parse as its content type. Those are answered 400 whatever the
// policy reads, so they are found out first, as buildInput would, and
// the caller then takes buildInput's way (so a cached decision never
// answers them).
func lookupAll(vals []any, in *Input, paths [][]string, redact bool) (_ []any, ok bool) {
	var sec inputSections
	if sec.checkPath(in) != nil || sec.loadBody(in) != nil {
		return vals, false
	}
	for _, p := range paths {
		v, found, err := sec.lookup(in, p, redact)
		if err != nil {
			return vals, false
		}
		if !found {
			v = absent
		}
		vals = append(vals, v)
	}
	return vals, true
}

// appendKey appends to buf an encoding of vals (lookupAll's). Equal keys
// mean equal values at every path: each value is tagged by type and
// length-prefixed, and objects are written in key order. ok is false when
// the key would be too long or a value has a type the encoding does not
// know: the caller then evaluates without the cache.
func appendKey(buf []byte, vals []any) (_ []byte, ok bool) {
	for _, v := range vals {
		if v == absent {
			buf = append(buf, 'x')
			continue
		}
		if buf, ok = appendValue(buf, v); !ok || len(buf) > maxKeyBytes {
			return buf, false
		}
	}
	return buf, true
}

// minimalInput is the input document reduced to vals at paths: all of it
// that a query whose rules read only paths can see, so it evaluates the
// same as the whole document, without converting the rest of the request.
// paths are minimal (none contains another), so no value overwrites
// another.
func minimalInput(paths [][]string, vals []any) ast.Value {
	doc := make(map[string]any, 4)
	for i, p := range paths {
		if vals[i] == absent {
			continue
		}
		m := doc
		for _, k := range p[:len(p)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = make(map[string]any, 2)
				m[k] = next
			}
			m = next
		}
		m[p[len(p)-1]] = vals[i]
	}
	return ast.LazyObject(doc)
}

// inputSections holds the parts of the input document converted so far
// for one key, so that two paths into one part convert it once.
type inputSections struct {
	parsedPath []string // nil until read; never nil once parsed
	parsedQry  map[string]any
	bodyDone   bool
	body       any
	truncated  bool
	attrs      map[string]any
}

// lookup returns the value at p in the document buildInput builds. The
// cases below mirror buildInput; TestAppendKeyMatchesInput checks them
// against it.
func (s *inputSections) lookup(in *Input, p []string, redact bool) (any, bool, error) {
	name, rest := p[0], p[1:]
	switch name {
	case "attributes":
		ac := in.Check.GetAttributes()
		if len(rest) >= 3 && rest[0] == "request" && rest[1] == "http" {
			v, ok := envoyinput.HTTPField(ac, redact, rest[2], rest[3:])
			return v, ok, nil
		}
		if s.attrs == nil {
			s.attrs = envoyinput.Attributes(ac, redact)
		}
		if len(rest) == 0 {
			return s.attrs, true, nil
		}
		v, ok := envoyinput.Lookup(s.attrs, rest[0], rest[1:])
		return v, ok, nil
	case "parsed_path":
		if s.parsedPath == nil {
			var err error
			if s.parsedPath, err = envoyinput.ParsedPath(s.path(in)); err != nil {
				return nil, false, err
			}
		}
		return leaf(s.parsedPath, rest)
	case "parsed_query":
		if s.parsedQry == nil {
			var err error
			if s.parsedQry, err = envoyinput.ParsedQuery(s.path(in)); err != nil {
				return nil, false, err
			}
		}
		return follow(s.parsedQry, rest)
	case "parsed_body", "truncated_body":
		if err := s.loadBody(in); err != nil {
			return nil, false, err
		}
		if name == "truncated_body" {
			return leaf(s.truncated, rest)
		}
		if m, ok := s.body.(map[string]any); ok {
			return follow(m, rest)
		}
		return leaf(s.body, rest)
	case "version":
		return follow(envoyinput.Version(), rest)
	case "source_principal":
		if pr := in.Check.GetAttributes().GetSource().GetPrincipal(); pr != "" {
			return leaf(pr, rest)
		}
		return nil, false, nil
	case "identity":
		return identityLookup(&in.Identity, rest)
	case "service":
		if len(rest) == 0 {
			return map[string]any{"name": in.Service.Name, "audiences": nonNil(in.Service.Audiences)}, true, nil
		}
		switch rest[0] {
		case "name":
			return leaf(in.Service.Name, rest[1:])
		case "audiences":
			return leaf(nonNil(in.Service.Audiences), rest[1:])
		}
	}
	return nil, false, nil
}

// checkPath fails when the path or query cannot be input, without parsing
// them: most policies read neither parsed_query nor, on a hit, need the
// parsed path as a slice.
func (s *inputSections) checkPath(in *Input) error {
	return envoyinput.CheckPathAndQuery(s.path(in))
}

func (s *inputSections) path(in *Input) string {
	return in.Check.GetAttributes().GetRequest().GetHttp().GetPath()
}

func (s *inputSections) loadBody(in *Input) error {
	if s.bodyDone {
		return nil
	}
	h := in.Check.GetAttributes().GetRequest().GetHttp()
	var err error
	s.body, s.truncated, err = envoyinput.Body(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	s.bodyDone = err == nil
	return err
}

func identityLookup(id *Identity, rest []string) (any, bool, error) {
	if len(rest) == 0 {
		return identityDoc(id), true, nil
	}
	switch rest[0] {
	case "type":
		typ := id.Type
		if typ == "" {
			typ = IdentityAnonymous
		}
		return leaf(typ, rest[1:])
	case "issuer":
		return leaf(id.Issuer, rest[1:])
	case "subject":
		return leaf(id.Subject, rest[1:])
	case "audiences":
		return leaf(nonNil(id.Audiences), rest[1:])
	case "claims":
		if id.Claims == nil {
			return follow(map[string]any{}, rest[1:])
		}
		return follow(id.Claims, rest[1:])
	}
	return nil, false, nil
}

// leaf is v itself when no path is left: a string key into a scalar or an
// array is undefined in Rego.
func leaf(v any, rest []string) (any, bool, error) {
	if len(rest) > 0 {
		return nil, false, nil
	}
	return v, true, nil
}

func follow(m map[string]any, rest []string) (any, bool, error) {
	if len(rest) == 0 {
		return m, true, nil
	}
	v, ok := envoyinput.Lookup(m, rest[0], rest[1:])
	return v, ok, nil
}

// appendValue encodes v: a type tag, then a length-prefixed payload. The
// tags group Go types that OPA turns into the same Rego type, so equal
// encodings always mean equal Rego values (the converse need not hold:
// json.Number("1.0") and float64(1) only cost a miss).
func appendValue(buf []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(buf, 'n'), true
	case bool:
		if v {
			return append(buf, 't'), true
		}
		return append(buf, 'f'), true
	case string:
		return appendString(append(buf, 's'), v), true
	case json.Number:
		return appendString(append(buf, 'N'), string(v)), true
	case float64:
		return binary.BigEndian.AppendUint64(append(buf, 'F'), math.Float64bits(v)), true
	case int64:
		return binary.AppendVarint(append(buf, 'I'), v), true
	case int:
		return binary.AppendVarint(append(buf, 'I'), int64(v)), true
	case uint64:
		return binary.AppendUvarint(append(buf, 'U'), v), true
	case uint32:
		return binary.AppendUvarint(append(buf, 'U'), uint64(v)), true
	case []string:
		buf = binary.AppendUvarint(append(buf, 'a'), uint64(len(v)))
		for _, s := range v {
			buf = appendString(append(buf, 's'), s)
		}
		return buf, true
	case []any:
		buf = binary.AppendUvarint(append(buf, 'a'), uint64(len(v)))
		for _, e := range v {
			var ok bool
			if buf, ok = appendValue(buf, e); !ok || len(buf) > maxKeyBytes {
				return buf, false
			}
		}
		return buf, true
	case map[string]string:
		buf = binary.AppendUvarint(append(buf, 'o'), uint64(len(v)))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			buf = appendString(append(appendString(buf, k), 's'), v[k])
		}
		return buf, true
	case map[string]any:
		buf = binary.AppendUvarint(append(buf, 'o'), uint64(len(v)))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			var ok bool
			if buf, ok = appendValue(appendString(buf, k), v[k]); !ok || len(buf) > maxKeyBytes {
				return buf, false
			}
		}
		return buf, true
	}
	return buf, false
}

func appendString(buf []byte, s string) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(s))), s...)
}
