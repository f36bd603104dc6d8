package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in YAML as a Go duration ("30s", "5m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a duration such as \"30s\"")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"30s\"; got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Secret is a string that never prints: fmt, slog and YAML output show a
// redaction marker instead of the value.
type Secret string

const redacted = "[REDACTED]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from leaking the value.
func (s Secret) GoString() string { return s.String() }

// MarshalYAML redacts the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Reveal returns the secret's value; call it only where the value is used.
func (s Secret) Reveal() string { return string(s) }

// String renders the config as YAML with secrets redacted.
func (c *Config) String() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return string(b)
}

// Parse decodes, expands, defaults and validates a YAML document. path is
// used for error messages and to resolve relative paths ("" for none).
// lookupEnv resolves ${VAR} references.
func Parse(data []byte, path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", displayPath(path), err)
	}
	c := Default()
	c.Path = path
	if len(root.Content) == 0 { // empty document: all defaults
		c.fill()
		c.resolvePaths()
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("%s: invalid configuration:\n%w", displayPath(path), err)
		}
		return c, nil
	}
	doc := root.Content[0]
	var p problems
	checkKeys(doc, reflect.TypeOf(*c), "", &p)
	expandEnv(doc, "", lookupEnv, &p)
	// Decode and validate even after key or type problems (unknown keys
	// are ignored by Decode), so one run of `tollgate check` lists every
	// problem, not just the first kind found.
	if err := doc.Decode(c); err != nil {
		p = append(p, decodeErr(err))
	}
	c.fill()
	c.resolvePaths()
	if err := c.Validate(); err != nil {
		p = append(p, err)
	}
	if len(p) > 0 {
		return nil, fmt.Errorf("%s: invalid configuration:\n%w", displayPath(path), errors.Join(p...))
	}
	return c, nil
}

func displayPath(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// decodeErr turns yaml.v3's type errors ("line 3: cannot unmarshal ...")
// into problems; the keys were checked already so only type errors remain.
func decodeErr(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "\n"))
	}
	return err
}

// checkKeys walks the node tree against the struct type and reports every
// key that has no matching field, with its YAML path and line. yaml.v3's
// KnownFields stops at the first unknown key and names the Go type rather
// than the YAML path; operators need all of them, by path.
func checkKeys(n *yaml.Node, t reflect.Type, path string, p *problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.AliasNode:
		checkKeys(n.Alias, t, path, p)
	case yaml.MappingNode:
		switch t.Kind() {
		case reflect.Struct:
			fields := yamlFields(t)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				kp := join(path, k.Value)
				f, ok := fields[k.Value]
				if !ok {
					p.add(kp, "unknown key (line %d)", k.Line)
					continue
				}
				checkKeys(v, f.Type, kp, p)
			}
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), p)
			}
		default:
			p.add(path, "must be %s, not a mapping (line %d)", kindName(t), n.Line)
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			p.add(path, "must be %s, not a list (line %d)", kindName(t), n.Line)
			return
		}
		for i, c := range n.Content {
			checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), p)
		}
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return
		}
		if t.Kind() == reflect.Struct || t.Kind() == reflect.Map || t.Kind() == reflect.Slice {
			p.add(path, "must be %s, not a scalar (line %d)", kindName(t), n.Line)
		}
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	default:
		return "a " + t.Kind().String()
	}
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// expandEnv replaces ${VAR} in scalar values. Only the braced form is
// expanded so that "$" in ordinary values (regexes, passwords) is kept; "$$"
// is a literal "$". An unset variable is an error at its YAML path.
func expandEnv(n *yaml.Node, path string, lookup func(string) (string, bool), p *problems) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandEnv(n.Content[i+1], join(path, n.Content[i].Value), lookup, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandEnv(c, fmt.Sprintf("%s[%d]", path, i), lookup, p)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		v, err := expand(n.Value, lookup)
		if err != nil {
			p.add(path, "%v (line %d)", err, n.Line)
			return
		}
		n.Value = v
		if n.Style == 0 {
			// Let a plain "${PORT}" resolve to an int again; the value
			// is never re-parsed, so it cannot change the document.
			n.Tag = ""
		}
	}
}

func expand(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${")
			}
			name := s[i+2 : i+end]
			if name == "" {
				return "", errors.New("empty ${}")
			}
			v, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(v)
			i += end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}

// checkFetchURL enforces https for key material, except for loopback hosts
// or when the operator opted in with insecure_http: a key set fetched in
// clear text can be replaced on the wire.
func checkFetchURL(path, raw string, insecure bool, p *problems) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		p.add(path, "must be an absolute http(s) URL; got %q", raw)
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !insecure && !IsLoopback(u.Hostname()) {
			p.add(path, "must be https (http:// only for loopback hosts or with insecure_http: true)")
		}
	default:
		p.add(path, "scheme must be https; got %q", u.Scheme)
	}
}

// IsLoopback reports whether host is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
