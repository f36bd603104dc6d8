package envoyinput

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/util"
)

// ErrRequest marks a request that cannot be turned into an input document
// (bad percent-encoding, a body that does not parse as its content type
// says, a malformed content-length). The plugin denies such a request with
// HTTP 400 without evaluating the policy.
var ErrRequest = errors.New("request cannot be represented as policy input")

// Version returns input.version for ext_authz v3.
func Version() map[string]any {
	return map[string]any{"ext_authz": "v3", "encoding": "protojson"}
}

// PathAndQuery returns input.parsed_path and input.parsed_query for an
// HTTP path as Envoy sends it (with the query): the path percent-decoded,
// leading slashes trimmed and split on "/"; the query as an object of
// arrays of strings.
func PathAndQuery(path string) (parsedPath []string, parsedQuery map[string]any, err error) {
	if parsedPath, err = ParsedPath(path); err != nil {
		return nil, nil, err
	}
	if parsedQuery, err = ParsedQuery(path); err != nil {
		return nil, nil, err
	}
	return parsedPath, parsedQuery, nil
}

// ParsedPath is PathAndQuery's parsed_path alone.
func ParsedPath(path string) ([]string, error) {
	rawPath, _, _ := strings.Cut(path, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, fmt.Errorf("%w: path: %v", ErrRequest, err)
	}
	return strings.Split(strings.TrimLeft(decoded, "/"), "/"), nil
}

// ParsedQuery is PathAndQuery's parsed_query alone.
func ParsedQuery(path string) (map[string]any, error) {
	_, rawQuery, _ := strings.Cut(path, "?")
	if rawQuery == "" {
		return map[string]any{}, nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: query: %v", ErrRequest, err)
	}
	return stringsObject(q), nil
}

// CheckPathAndQuery fails exactly when PathAndQuery would, without
// building either document (it allocates only to unescape): the decision
// cache checks every request this way and parses only what a policy reads.
// TestCheckPathAndQueryAgrees keeps the two in step.
func CheckPathAndQuery(path string) error {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	if _, err := url.PathUnescape(rawPath); err != nil {
		return fmt.Errorf("%w: path: %v", ErrRequest, err)
	}
	// url.ParseQuery's loop, keeping only its errors.
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if strings.Contains(pair, ";") {
			return fmt.Errorf("%w: query: invalid semicolon separator in query", ErrRequest)
		}
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if _, err := url.QueryUnescape(k); err != nil {
			return fmt.Errorf("%w: query: %v", ErrRequest, err)
		}
		if _, err := url.QueryUnescape(v); err != nil {
			return fmt.Errorf("%w: query: %v", ErrRequest, err)
		}
	}
	return nil
}

func stringsObject(m map[string][]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Body returns input.parsed_body and input.truncated_body. As in the
// plugin, a body is parsed when the content-type says JSON, URL-encoded
// form or multipart form; gRPC bodies are not decoded (no descriptor set
// is configured), and anything else is null.
func Body(headers map[string]string, body string, raw []byte) (parsed any, truncated bool, err error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	ct, ok := headers["content-type"]
	if !ok {
		return nil, false, nil
	}
	var kind string
	switch {
	case strings.Contains(ct, "application/json"):
		kind = "json"
	case strings.Contains(ct, "application/grpc"):
		return nil, false, nil
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		kind = "form"
	case strings.Contains(ct, "multipart/form-data"):
		kind = "multipart"
	default:
		return nil, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}
	if payload == "" {
		return nil, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%w: content-length: %v", ErrRequest, err)
		}
		if n != -1 && n > int64(len(payload)) {
			return nil, true, nil
		}
	}
	switch kind {
	case "json":
		var x any
		if err := util.UnmarshalJSON([]byte(payload), &x); err != nil {
			return nil, false, fmt.Errorf("%w: JSON body: %v", ErrRequest, err)
		}
		return x, false, nil
	case "form":
		q, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, fmt.Errorf("%w: form body: %v", ErrRequest, err)
		}
		return stringsObject(q), false, nil
	}
	v, err := multipartBody(ct, payload)
	return v, false, err
}

func multipartBody(ct, payload string) (any, error) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("%w: content-type: %v", ErrRequest, err)
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, nil
	}
	values := map[string]any{}
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: multipart body: %v", ErrRequest, err)
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("%w: multipart body: %v", ErrRequest, err)
		}
		var v any = string(data)
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			var x any
			if err := util.UnmarshalJSON(data, &x); err != nil {
				return nil, fmt.Errorf("%w: multipart JSON part: %v", ErrRequest, err)
			}
			v = x
		}
		prev, _ := values[name].([]any)
		values[name] = append(prev, v)
	}
	return values, nil
}
