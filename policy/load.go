package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// generation is one compiled policy: immutable once built, shared by every
// Eval that loaded it, dropped when the last of them returns.
type generation struct {
	id        uint64
	def       *query
	byService map[string]*query
	modules   int
	warnings  []string
	queries   []*query // each distinct query once, in load order
}

func (g *generation) queryFor(service string) *query {
	if q, ok := g.byService[service]; ok {
		return q
	}
	return g.def
}

// sources are the parsed inputs of one build.
type sources struct {
	modules map[string]*ast.Module // policies, by file name
	tests   map[string]*ast.Module // *_test.rego
	data    map[string]any
}

// skipHidden leaves out dot-files and dot-directories (editor swap files,
// Kubernetes ConfigMap ..data links) below the given roots.
func skipHidden(_ string, info fs.FileInfo, depth int) bool {
	return depth > 0 && strings.HasPrefix(info.Name(), ".")
}

func isTestFile(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// load reads paths like `opa run` and adds the bundle's modules and data.
func load(paths []string, ver ast.RegoVersion, b *bundle.Bundle) (*sources, error) {
	src := &sources{modules: map[string]*ast.Module{}, tests: map[string]*ast.Module{}, data: map[string]any{}}
	if len(paths) > 0 {
		res, err := loader.NewFileLoader().
			WithRegoVersion(ver).
			WithProcessAnnotation(true).
			Filtered(paths, skipHidden)
		if err != nil {
			return nil, err
		}
		for name, f := range res.Modules {
			if isTestFile(name) {
				src.tests[name] = f.Parsed
			} else {
				src.modules[name] = f.Parsed
			}
		}
		src.data = res.Documents
	}
	if b != nil {
		for _, mf := range b.Modules {
			name := "bundle:" + mf.Path
			if isTestFile(mf.Path) {
				src.tests[name] = mf.Parsed
			} else {
				src.modules[name] = mf.Parsed
			}
		}
		if err := mergeData(src.data, b.Data, "data"); err != nil {
			return nil, fmt.Errorf("bundle data conflicts with local data: %w", err)
		}
	}
	return src, nil
}

// mergeData adds src into dst; two values at the same path conflict
// unless both are objects.
func mergeData(dst, src map[string]any, at string) error {
	for k, v := range src {
		cur, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		cm, ok1 := cur.(map[string]any)
		vm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("%s.%s is defined twice", at, k)
		}
		if err := mergeData(cm, vm, at+"."+k); err != nil {
			return err
		}
	}
	return nil
}

// build loads, compiles, optionally tests, and prepares every query.
func build(ctx context.Context, cfg Config, b *bundle.Bundle, id uint64) (*generation, error) {
	ver, err := regoVersion(cfg.RegoVersion)
	if err != nil {
		return nil, err
	}
	src, err := load(cfg.Paths, ver, b)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().
		WithDefaultRegoVersion(ver).
		WithCapabilities(ast.CapabilitiesForThisVersion())
	if compiler.Compile(src.modules); compiler.Failed() {
		return nil, compiler.Errors
	}
	// Data is kept as AST values, so a policy reading data costs no
	// conversion per evaluation.
	store := inmem.NewFromObjectWithOpts(src.data,
		inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	if cfg.TestOnReload && len(src.tests) > 0 {
		if err := runTests(ctx, src, store, ver); err != nil {
			return nil, err
		}
	}
	// One read transaction serves every evaluation of this generation.
	// The store is never written after this point, so the transaction is
	// never aborted: it goes away with the generation.
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	g := &generation{id: id, modules: len(src.modules), byService: map[string]*query{}}
	prepared := map[string]*query{}
	prep := func(text string) (*query, error) {
		if q, ok := prepared[text]; ok {
			return q, nil
		}
		pq, err := rego.New(
			rego.Query(text),
			rego.Compiler(compiler),
			rego.Store(store),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", text, err)
		}
		q := &query{text: text, pq: pq, opts: []rego.EvalOption{
			rego.EvalTransaction(txn), noMetrics, resultTerm,
		}}
		if q.deps, err = analyzeDeps(compiler, text); err != nil {
			return nil, err
		}
		if !cfg.DecisionCache.Disabled && q.deps.Uncacheable == "" {
			q.cache = newDecisionCache(cfg.DecisionCache.MaxEntries, cfg.DecisionCache.MaxBytes)
		}
		prepared[text] = q
		g.queries = append(g.queries, q)
		if !defined(compiler, src.data, text) {
			g.warnings = append(g.warnings, text)
		}
		return q, nil
	}
	if g.def, err = prep(cfg.Query); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.ServiceQueries)) {
		if g.byService[name], err = prep(cfg.ServiceQueries[name]); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// defined reports whether some rule or data document can define the query,
// to warn about a misspelt one (which would deny everything).
func defined(c *ast.Compiler, data map[string]any, text string) bool {
	ref := ast.MustParseRef(text)
	if len(c.GetRules(ref)) > 0 {
		return true
	}
	var cur any = data
	for _, t := range ref[1:] {
		m, ok := cur.(map[string]any)
		s, isStr := t.Value.(ast.String)
		if !ok || !isStr {
			return false
		}
		if cur, ok = m[string(s)]; !ok {
			return false
		}
	}
	return true
}

// TestFailure is the error of a load whose Rego tests failed.
type TestFailure struct {
	// Failed lists each failed or erroring test as "file:line: package.test".
	Failed []string
}

func (f *TestFailure) Error() string {
	return fmt.Sprintf("%d Rego test(s) failed:\n  %s", len(f.Failed), strings.Join(f.Failed, "\n  "))
}

// runTests runs the Rego tests among src against its data.
func runTests(ctx context.Context, src *sources, store storage.Store, ver ast.RegoVersion) error {
	all := make(map[string]*ast.Module, len(src.modules)+len(src.tests))
	maps.Copy(all, src.modules)
	maps.Copy(all, src.tests)
	ch, err := tester.NewRunner().
		SetDefaultRegoVersion(ver).
		SetStore(store).
		SetModules(all).
		SetTimeout(10*time.Second).
		RunTests(ctx, nil)
	if err != nil {
		return err
	}
	var failed []string
	for r := range ch {
		if r.Pass() || r.Skip {
			continue
		}
		loc := ""
		if r.Location != nil {
			loc = r.Location.String() + ": "
		}
		msg := loc + strings.TrimPrefix(r.Package, "data.") + "." + r.Name
		if r.Error != nil {
			msg += ": " + r.Error.Error()
		}
		failed = append(failed, msg)
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return &TestFailure{Failed: failed}
	}
	return ctx.Err()
}

// errNoTests is returned by Test when the paths hold no test.
var errNoTests = errors.New("no tests found")
