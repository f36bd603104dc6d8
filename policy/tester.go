package policy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestOptions configures Test.
type TestOptions struct {
	// Verbose lists every test, not only failures, with print() output.
	Verbose bool
	// RegoVersion is "v1" (default) or "v0".
	RegoVersion string
	// Run, when set, runs only the tests whose name matches this regular
	// expression (like opa test --run).
	Run string
	// Timeout bounds each test. Default 5s.
	Timeout time.Duration
}

// Test runs the Rego unit tests (test_* rules) found in paths with OPA's
// tester against the policies and data in the same paths, and writes
// OPA's report to w. It returns whether every test passed; a load or
// compile error (with its file:line) is returned as err. Paths with no
// test at all are an error, so a typo in a path cannot pass silently.
func Test(ctx context.Context, w io.Writer, paths []string, opts TestOptions) (bool, error) {
	ver, err := regoVersion(opts.RegoVersion)
	if err != nil {
		return false, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	src, err := load(paths, ver, nil)
	if err != nil {
		return false, err
	}
	if len(src.tests) == 0 {
		return false, fmt.Errorf("%w in %v (test files end in _test.rego)", errNoTests, paths)
	}
	modules := maps.Clone(src.modules)
	maps.Copy(modules, src.tests)
	ch, err := tester.NewRunner().
		SetDefaultRegoVersion(ver).
		SetStore(inmem.NewFromObject(src.data)).
		SetModules(modules).
		SetTimeout(opts.Timeout).
		CapturePrintOutput(opts.Verbose).
		Filter(opts.Run).
		RunTests(ctx, nil)
	if err != nil {
		return false, err
	}
	passed := true
	tee := make(chan *tester.Result)
	go func() {
		defer close(tee)
		for r := range ch {
			if !r.Pass() && !r.Skip {
				passed = false
			}
			tee <- r
		}
	}()
	rep := tester.PrettyReporter{Output: w, Verbose: opts.Verbose, FailureLine: true}
	if err := rep.Report(tee); err != nil {
		return false, err
	}
	return passed, nil
}
