package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// eventually polls cond every 5ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func versioned(v string) string {
	return fmt.Sprintf("package tollgate.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-version\": %q}}\n", v)
}

// version returns the x-version header the current policy answers with.
func version(t *testing.T, e *Engine) string {
	t.Helper()
	res, err := e.Eval(t.Context(), &Input{Check: envoyRequest("GET", "/", nil)})
	if err != nil {
		t.Fatalf("Eval = %v", err)
	}
	for _, h := range res.Headers {
		if h.Key == "x-version" {
			return h.Value
		}
	}
	return ""
}

// Editing a file changes decisions within a second; a broken file leaves
// the previous policy serving and Status names file:line; fixing it
// recovers. Editors that replace files by rename, and new directories,
// are seen too.
func TestReloadOnFileChanges(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	writeFiles(t, dir, map[string]string{"policy.rego": versioned("1")})
	e := newEngine(t, Config{Paths: []string{dir}})
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := version(t, e); got != "1" {
		t.Fatalf("version = %q; want 1", got)
	}

	steps := []struct {
		name  string
		apply func()
		want  string
		error string // expected in Status().LastError, "" for none
	}{
		{"edit in place → new decision", func() { write(t, file, versioned("2")) }, "2", ""},
		{"broken file → old decision, error with file:line", func() {
			write(t, file, "package tollgate.authz\n\nallow := {\"allowed\": true,\n")
		}, "2", "policy.rego:"},
		{"fixed → recovers", func() { write(t, file, versioned("3")) }, "3", ""},
		{"editor writes a temp file and renames it over", func() {
			tmp := filepath.Join(dir, ".policy.rego.swp")
			write(t, tmp, versioned("4"))
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
		}, "4", ""},
		{"new subdirectory with a data file used by the policy", func() {
			write(t, file, "package tollgate.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-version\": data.sub.v}}\n")
			if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "sub", "data.json"), `{"v": "5"}`)
		}, "5", ""},
		{"change inside the new subdirectory", func() { write(t, filepath.Join(dir, "sub", "data.json"), `{"v": "6"}`) }, "6", ""},
	}
	for _, s := range steps {
		before := e.Status().LastReload
		s.apply()
		start := time.Now()
		eventually(t, time.Second, s.name, func() bool {
			st := e.Status()
			return st.LastReload.After(before) && version(t, e) == s.want &&
				(s.error == "") == (st.LastError == "")
		})
		st := e.Status()
		if s.error != "" && !strings.Contains(st.LastError, s.error) {
			t.Errorf("%s: Status().LastError = %q; want it to name %q", s.name, st.LastError, s.error)
		}
		if !st.Ready {
			t.Errorf("%s: Status().Ready = false", s.name)
		}
		t.Logf("%s: took %s", s.name, time.Since(start).Round(time.Millisecond))
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// While 20 reloads swap the policy, concurrent evaluations never fail
// and never see an undefined decision: each finishes on the generation it
// started with.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	writeFiles(t, dir, map[string]string{"policy.rego": versioned("0")})
	// A generous timeout: this test is about swaps, and -race on a busy
	// machine can stall an evaluation past the default 50ms.
	e := newEngine(t, Config{Paths: []string{dir}, WatchDebounce: 5 * time.Millisecond, Timeout: 10 * time.Second})
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var (
		stop      atomic.Bool
		evals     atomic.Int64
		failures  atomic.Int64
		firstFail atomic.Value
		wg        sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			req := &Input{Check: envoyRequest("GET", "/", nil)}
			for !stop.Load() {
				res, err := e.Eval(t.Context(), req)
				evals.Add(1)
				if err != nil || !res.Defined || !res.Allowed || len(res.Headers) != 1 {
					failures.Add(1)
					firstFail.CompareAndSwap(nil, fmt.Sprintf("%+v, %v", res, err))
				}
			}
		})
	}
	const swaps = 20
	for i := 1; i <= swaps; i++ {
		write(t, file, versioned(fmt.Sprint(i)))
		eventually(t, 2*time.Second, fmt.Sprintf("swap %d", i), func() bool { return version(t, e) == fmt.Sprint(i) })
	}
	stop.Store(true)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Errorf("%d of %d evaluations failed during swaps; first: %v", f, evals.Load(), firstFail.Load())
	}
	if got := version(t, e); got != fmt.Sprint(swaps) {
		t.Errorf("final version = %q; want %d", got, swaps)
	}
	t.Logf("%d evaluations during %d swaps", evals.Load(), swaps)
}

// A failing Rego test rejects a reload when test_on_reload is set.
func TestReloadRejectsFailingTests(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"policy.rego":      versioned("1"),
		"policy_test.rego": "package tollgate.authz_test\n\ntest_allowed if data.tollgate.authz.allow.allowed\n",
	})
	e := newEngine(t, Config{Paths: []string{dir}, TestOnReload: true})
	write(t, filepath.Join(dir, "policy.rego"), "package tollgate.authz\n\nallow := {\"allowed\": false}\n")
	err := e.Reload(t.Context())
	if err == nil || !strings.Contains(err.Error(), "policy_test.rego:3") {
		t.Fatalf("Reload = %v; want the failing test's file:line", err)
	}
	if got := version(t, e); got != "1" {
		t.Errorf("after a rejected reload version = %q; want 1", got)
	}
	if st := e.Status(); st.Generation != 1 || !strings.Contains(st.LastError, "test_allowed") {
		t.Errorf("Status() = %+v; want generation 1 and the failed test", st)
	}
}

// A Kubernetes ConfigMap volume publishes new contents by swapping the
// ..data symlink; the visible files are symlinks through it.
func TestReloadConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	publish := func(v string) {
		ts := filepath.Join(dir, "..ts_"+v)
		writeFiles(t, ts, map[string]string{"policy.rego": versioned(v)})
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("1")
	if err := os.Symlink(filepath.Join("..data", "policy.rego"), filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, Config{Paths: []string{dir}})
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := version(t, e); got != "1" {
		t.Fatalf("version = %q; want 1", got)
	}
	publish("2")
	eventually(t, time.Second, "ConfigMap update served", func() bool { return version(t, e) == "2" })
}
