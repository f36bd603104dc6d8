package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputDeps is what one decision can read of its input, found by reading
// the compiled rules the query can reach.
//
// A decision is a function of its input and of the generation's data
// unless a rule calls a builtin whose answer depends on something else
// (the clock, the network, randomness). The policy can only reach the
// input through refs rooted at `input`, so the values at those refs,
// each cut at its first segment that is not a constant string, are all
// the input it can see: two requests that agree on them get the same
// decision. That is what makes a decision cache sound.
type inputDeps struct {
	// Paths are the input paths read, sorted, with no path that another
	// one contains (input.a covers input.a.b).
	Paths [][]string
	// Uncacheable names why a cache cannot be used, with file:line; "" if
	// it can.
	Uncacheable string
}

// Refs are the paths as Rego refs (input.a.b).
func (d inputDeps) Refs() []string {
	refs := make([]string, len(d.Paths))
	for i, p := range d.Paths {
		refs[i] = "input." + strings.Join(p, ".")
	}
	return refs
}

// String lists the paths as refs, or why there are none, for logs.
func (d inputDeps) String() string {
	if d.Uncacheable != "" {
		return "uncacheable: " + d.Uncacheable
	}
	return strings.Join(d.Refs(), ", ")
}

// impure are builtins OPA does not mark nondeterministic whose result
// still depends on more than their arguments (the clock), or whose effect
// a cached decision would skip (print, trace).
var impure = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
	"print":          true,
	"internal.print": true,
	"trace":          true,
}

// analyzeDeps finds the input paths the query's rules read.
func analyzeDeps(c *ast.Compiler, query string) (inputDeps, error) {
	ref, err := ast.ParseRef(query)
	if err != nil {
		return inputDeps{}, fmt.Errorf("query %s: %w", query, err)
	}
	a := &depWalk{c: c, seen: map[*ast.Rule]bool{}}
	a.ref(ref, nil)
	for len(a.todo) > 0 && a.why == "" {
		r := a.todo[len(a.todo)-1]
		a.todo = a.todo[:len(a.todo)-1]
		a.rule(r)
	}
	if a.why != "" {
		return inputDeps{Uncacheable: a.why}, nil
	}
	return inputDeps{Paths: minimalPaths(a.paths)}, nil
}

type depWalk struct {
	c     *ast.Compiler
	seen  map[*ast.Rule]bool
	todo  []*ast.Rule
	paths [][]string
	why   string
}

func (a *depWalk) fail(loc *ast.Location, format string, args ...any) {
	if a.why != "" {
		return
	}
	a.why = fmt.Sprintf(format, args...)
	if loc != nil {
		a.why = loc.String() + ": " + a.why
	}
}

// ref records an input path or queues the rules a data ref can reach.
func (a *depWalk) ref(r ast.Ref, loc *ast.Location) {
	switch {
	case r.HasPrefix(ast.InputRootRef):
		var p []string
		for _, t := range r[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				break
			}
			p = append(p, string(s))
		}
		if len(p) == 0 {
			a.fail(loc, "reads the whole input (%s)", r)
			return
		}
		a.paths = append(a.paths, p)
	case r.HasPrefix(ast.DefaultRootRef):
		for _, rule := range a.c.GetRulesDynamicWithOpts(r, ast.RulesOptions{IncludeHiddenModules: true}) {
			if !a.seen[rule] {
				a.seen[rule] = true
				a.todo = append(a.todo, rule)
			}
		}
	}
}

func (a *depWalk) rule(r *ast.Rule) {
	var visit func(t *ast.Term) bool
	visit = func(t *ast.Term) bool {
		switch v := t.Value.(type) {
		case ast.Ref:
			loc := v[0].Location
			if loc == nil {
				loc = t.Location
			}
			a.ref(v, loc)
			// The head is the ref's root; keys may hold refs of their own.
			for _, k := range v[1:] {
				ast.WalkTerms(k, visit)
			}
			return true
		case ast.Var:
			// The compiler turns input into a ref; a bare var would be
			// the whole document all the same.
			if v.Equal(ast.InputRootDocument.Value) {
				a.fail(t.Location, "reads the whole input (input)")
			}
		case ast.Call:
			if len(v) > 0 {
				a.call(v[0].Value, t.Location)
			}
		}
		return false
	}
	ast.WalkTerms(r, visit)
	ast.WalkExprs(r, func(e *ast.Expr) bool {
		if e.IsCall() {
			a.call(e.OperatorTerm().Value, e.Location)
		}
		return false
	})
}

// call fails the analysis for a builtin whose result depends on more than
// its arguments. Calls of the policy's own functions are refs into data,
// already followed by ref.
func (a *depWalk) call(op ast.Value, loc *ast.Location) {
	r, ok := op.(ast.Ref)
	if !ok || r.HasPrefix(ast.DefaultRootRef) {
		return
	}
	name := r.String()
	b, known := ast.BuiltinMap[name]
	switch {
	case !known:
		a.fail(loc, "calls %s, which is not a builtin this engine knows", name)
	case b.Nondeterministic || impure[name]:
		a.fail(loc, "calls %s, whose result does not depend on its arguments alone", name)
	}
}

// minimalPaths sorts, dedupes and drops paths contained in another.
func minimalPaths(ps [][]string) [][]string {
	slices.SortFunc(ps, slices.Compare)
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && hasPrefix(p, out[n-1]) {
			continue
		}
		out = append(out, p)
	}
	return slices.Clip(out)
}

func hasPrefix(p, prefix []string) bool {
	return len(p) >= len(prefix) && slices.Equal(p[:len(prefix)], prefix)
}
