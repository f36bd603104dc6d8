package policy

import (
	"encoding/json"
	"fmt"
	"net/http"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/structpb"
)

// Header is one header (or query parameter) name and value.
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Result is a decoded decision. The zero value denies.
//
// The policy's result is either a boolean (allow or deny, nothing else) or
// an object with the fields the OPA-Envoy plugin accepts; "allowed" is
// then required. Following the plugin, Headers go to the upstream request
// when allowed and to the client with a denial; RequestHeadersToRemove,
// ResponseHeadersToAdd and the query parameter fields apply when allowed;
// HTTPStatus and Body apply to a denial. Fields are decoded strictly
// whether or not they apply: a wrongly typed one is an error.
type Result struct {
	// Defined is false when the query was undefined (no rule applied and
	// no default): a deny, not an error.
	Defined bool
	Allowed bool
	// Headers from "headers": an object of string or array-of-string
	// values, or an array of such objects. Sorted by key within an object.
	Headers []Header
	// RequestHeadersToRemove from "request_headers_to_remove".
	RequestHeadersToRemove []string
	// ResponseHeadersToAdd from "response_headers_to_add", same forms as
	// Headers.
	ResponseHeadersToAdd []Header
	// HTTPStatus from "http_status"; 0 when unset. Must be a status Envoy
	// knows.
	HTTPStatus int
	// Body from "body".
	Body string
	// DynamicMetadata from "dynamic_metadata" (an object).
	DynamicMetadata *structpb.Struct
	// QueryParametersToSet from "query_parameters_to_set": an object of
	// string or array-of-string values.
	QueryParametersToSet []Header
	// QueryParametersToRemove from "query_parameters_to_remove".
	QueryParametersToRemove []string
}

// Decision field names, as interned keys.
var (
	kAllowed      = ast.StringTerm("allowed")
	kHeaders      = ast.StringTerm("headers")
	kRemove       = ast.StringTerm("request_headers_to_remove")
	kRespHeaders  = ast.StringTerm("response_headers_to_add")
	kStatus       = ast.StringTerm("http_status")
	kBody         = ast.StringTerm("body")
	kMetadata     = ast.StringTerm("dynamic_metadata")
	kQuerySet     = ast.StringTerm("query_parameters_to_set")
	kQueryRemove  = ast.StringTerm("query_parameters_to_remove")
	decisionNames = []*ast.Term{kHeaders, kRemove, kRespHeaders, kStatus, kBody, kMetadata, kQuerySet, kQueryRemove}
)

// decodeDecision decodes a query result once into a Result.
func decodeDecision(v ast.Value) (Result, error) {
	switch v := v.(type) {
	case ast.Boolean:
		return Result{Defined: true, Allowed: bool(v)}, nil
	case ast.Object:
		return decodeObject(v)
	}
	return Result{}, fmt.Errorf("decision must be a boolean or an object, got %s", ast.ValueName(v))
}

func decodeObject(o ast.Object) (Result, error) {
	r := Result{Defined: true}
	a := o.Get(kAllowed)
	if a == nil {
		return Result{}, fmt.Errorf(`decision object has no "allowed" field`)
	}
	b, ok := a.Value.(ast.Boolean)
	if !ok {
		return Result{}, fmt.Errorf(`decision field "allowed" must be a boolean, got %s`, ast.ValueName(a.Value))
	}
	r.Allowed = bool(b)
	for _, k := range decisionNames {
		t := o.Get(k)
		if t == nil {
			continue
		}
		var err error
		switch k {
		case kHeaders:
			r.Headers, err = headerList(t.Value)
		case kRespHeaders:
			r.ResponseHeadersToAdd, err = headerList(t.Value)
		case kRemove:
			r.RequestHeadersToRemove, err = stringList(t.Value)
		case kQueryRemove:
			r.QueryParametersToRemove, err = stringList(t.Value)
		case kQuerySet:
			var obj ast.Object
			if obj, ok = t.Value.(ast.Object); !ok {
				err = fmt.Errorf("must be an object, got %s", ast.ValueName(t.Value))
				break
			}
			r.QueryParametersToSet, err = headerObject(obj, nil)
		case kStatus:
			r.HTTPStatus, err = httpStatus(t.Value)
		case kBody:
			s, ok := t.Value.(ast.String)
			if !ok {
				err = fmt.Errorf("must be a string, got %s", ast.ValueName(t.Value))
			}
			r.Body = string(s)
		case kMetadata:
			r.DynamicMetadata, err = metadata(t.Value)
		}
		if err != nil {
			return Result{}, fmt.Errorf("decision field %s: %w", k, err)
		}
	}
	return r, nil
}

// headerList accepts an object of string or array-of-string values, or
// an array of such objects.
func headerList(v ast.Value) ([]Header, error) {
	switch v := v.(type) {
	case ast.Object:
		return headerObject(v, nil)
	case *ast.Array:
		var out []Header
		var err error
		for i := range v.Len() {
			obj, ok := v.Elem(i).Value.(ast.Object)
			if !ok {
				return nil, fmt.Errorf("element %d must be an object, got %s", i, ast.ValueName(v.Elem(i).Value))
			}
			if out, err = headerObject(obj, out); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("must be an object or an array of objects, got %s", ast.ValueName(v))
}

func headerObject(o ast.Object, out []Header) ([]Header, error) {
	var err error
	o.Foreach(func(k, v *ast.Term) {
		if err != nil {
			return
		}
		key, ok := k.Value.(ast.String)
		if !ok {
			err = fmt.Errorf("key %v must be a string", k)
			return
		}
		switch v := v.Value.(type) {
		case ast.String:
			out = append(out, Header{Key: string(key), Value: string(v)})
		case *ast.Array:
			for i := range v.Len() {
				s, ok := v.Elem(i).Value.(ast.String)
				if !ok {
					err = fmt.Errorf("%s: values must be strings, got %s", key, ast.ValueName(v.Elem(i).Value))
					return
				}
				out = append(out, Header{Key: string(key), Value: string(s)})
			}
		default:
			err = fmt.Errorf("%s: value must be a string or an array of strings, got %s", key, ast.ValueName(v))
		}
	})
	return out, err
}

// stringList accepts an array or a set of strings.
func stringList(v ast.Value) ([]string, error) {
	var terms []*ast.Term
	switch v := v.(type) {
	case *ast.Array:
		terms = make([]*ast.Term, v.Len())
		for i := range terms {
			terms[i] = v.Elem(i)
		}
	case ast.Set:
		terms = v.Slice()
	default:
		return nil, fmt.Errorf("must be an array of strings, got %s", ast.ValueName(v))
	}
	out := make([]string, len(terms))
	for i, t := range terms {
		s, ok := t.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("element %d must be a string, got %s", i, ast.ValueName(t.Value))
		}
		out[i] = string(s)
	}
	return out, nil
}

func httpStatus(v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("must be a number, got %s", ast.ValueName(v))
	}
	i, ok := n.Int()
	if !ok {
		return 0, fmt.Errorf("must be an integer, got %s", n)
	}
	if http.StatusText(i) == "" {
		return 0, fmt.Errorf("invalid HTTP status %d", i)
	}
	if _, ok := typev3.StatusCode_name[int32(i)]; !ok {
		return 0, fmt.Errorf("HTTP status %d is not one Envoy can send", i)
	}
	return i, nil
}

func metadata(v ast.Value) (*structpb.Struct, error) {
	if _, ok := v.(ast.Object); !ok {
		return nil, fmt.Errorf("must be an object, got %s", ast.ValueName(v))
	}
	x, err := ast.JSON(v)
	if err != nil {
		return nil, err
	}
	m, ok := x.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be an object")
	}
	return structpb.NewStruct(normalizeNumbers(m).(map[string]any))
}

// normalizeNumbers turns json.Number into float64, which structpb takes.
func normalizeNumbers(x any) any {
	switch x := x.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, v := range x {
			x[k] = normalizeNumbers(v)
		}
	case []any:
		for i, v := range x {
			x[i] = normalizeNumbers(v)
		}
	}
	return x
}

// MarshalJSON writes the decision object in the plugin's field names, as
// `tollgate policy eval` prints it. Empty fields are left out.
func (r Result) MarshalJSON() ([]byte, error) {
	type out struct {
		Defined                 bool            `json:"defined"`
		Allowed                 bool            `json:"allowed"`
		Headers                 []Header        `json:"headers,omitempty"`
		RequestHeadersToRemove  []string        `json:"request_headers_to_remove,omitempty"`
		ResponseHeadersToAdd    []Header        `json:"response_headers_to_add,omitempty"`
		HTTPStatus              int             `json:"http_status,omitempty"`
		Body                    string          `json:"body,omitempty"`
		DynamicMetadata         json.RawMessage `json:"dynamic_metadata,omitempty"`
		QueryParametersToSet    []Header        `json:"query_parameters_to_set,omitempty"`
		QueryParametersToRemove []string        `json:"query_parameters_to_remove,omitempty"`
	}
	o := out{
		Defined: r.Defined, Allowed: r.Allowed, Headers: r.Headers,
		RequestHeadersToRemove: r.RequestHeadersToRemove, ResponseHeadersToAdd: r.ResponseHeadersToAdd,
		HTTPStatus: r.HTTPStatus, Body: r.Body, QueryParametersToSet: r.QueryParametersToSet,
		QueryParametersToRemove: r.QueryParametersToRemove,
	}
	if r.DynamicMetadata != nil {
		bs, err := json.Marshal(r.DynamicMetadata.AsMap())
		if err != nil {
			return nil, err
		}
		o.DynamicMetadata = bs
	}
	return json.Marshal(o)
}
