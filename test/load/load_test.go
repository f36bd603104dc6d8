package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// buildNullauthz compiles ./nullauthz into a temp dir with -tags
// vtprotobuf, as `make bench` does, so the vt floor can be exercised too.
func buildNullauthz(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nullauthz")
	// Bounded separately from the run: a cold build cache can take a while
	// on two cores, and that is not what this test measures.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "vtprotobuf", "-o", bin, "./nullauthz")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./nullauthz: %v\n%s", err, out)
	}
	return bin
}

// TestSmokeAgainstNullauthz runs the orchestrator's core pieces end to end
// against real nullauthz processes on loopback: start and readiness, both
// load modes with server CPU and allocation accounting, the vt codec on the
// wire, the RSS sampler, the report, and shutdown. It asserts the plumbing
// works, not performance.
func TestSmokeAgainstNullauthz(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("server cost accounting reads /proc")
	}
	if testing.Short() {
		t.Skip("starts subprocesses and generates load for a few seconds")
	}
	bin := buildNullauthz(t)
	dir := t.TempDir()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()

	var servers []*server
	defer func() {
		for _, s := range servers {
			if err := s.stop(); err != nil {
				t.Errorf("%s stop() error = %v", s.Name, err)
			}
			if done, _ := s.exited(); !done {
				t.Errorf("%s pid %d still running after stop()", s.Name, s.PID)
			}
		}
	}()
	for _, codec := range []string{"proto", "vt"} {
		s, err := startNull(ctx, hc, bin, codec, filepath.Join(dir, "null-"+codec+".log"), 10*time.Second)
		if err != nil {
			t.Fatalf("startNull(%s) error = %v", codec, err)
		}
		servers = append(servers, s)
	}

	is, err := startIssuer(ctx)
	if err != nil {
		t.Fatalf("startIssuer() error = %v", err)
	}
	defer func() { _ = is.Close(context.Background()) }()
	tokens, err := is.mintN(ctx, 8)
	if err != nil {
		t.Fatalf("mintN(8) error = %v", err)
	}
	src, err := newRequestSource(tokens)
	if err != nil {
		t.Fatalf("newRequestSource() error = %v", err)
	}

	closed := loadSpec{Mode: modeClosed, Concurrency: 2, Duration: time.Second, MaxChecks: 1_000_000, CallTimeout: 5 * time.Second}
	fixed := loadSpec{Mode: modeFixed, Concurrency: 4, Rate: 200, Duration: time.Second, MaxChecks: 1_000_000, CallTimeout: 5 * time.Second}
	var rows []runResult
	var floor *target
	for i, s := range servers {
		tgt := s.target()
		if err := tgt.dial(ctx, 2); err != nil {
			t.Fatalf("%s dial() error = %v", s.Name, err)
		}
		defer tgt.close()
		specs := []loadSpec{closed}
		if i == 0 {
			floor = tgt
			specs = append(specs, fixed)
		}
		for _, spec := range specs {
			r, err := measure(ctx, hc, tgt, src, spec, 200*time.Millisecond)
			if err != nil {
				t.Fatalf("measure(%s, %v) error = %v", s.Name, spec, err)
			}
			l := r.Load
			if l.Checks == 0 || l.rate() <= 0 {
				t.Errorf("measure(%s, %v) checks = %d, rate = %.1f; want > 0", s.Name, spec, l.Checks, l.rate())
			}
			if l.Errors != 0 || l.NonOK != 0 {
				t.Errorf("measure(%s, %v) errors = %d, non-OK = %d (first: %v); want 0, 0", s.Name, spec, l.Errors, l.NonOK, l.FirstErr)
			}
			if !r.HaveCPU || !r.HaveAlloc {
				t.Errorf("measure(%s, %v) HaveCPU = %v, HaveAlloc = %v; want both true", s.Name, spec, r.HaveCPU, r.HaveAlloc)
			}
			// Decoding an Envoy-shaped CheckRequest alone allocates dozens
			// of times, so ≤ 1 would mean the accounting is broken.
			if a := r.AllocsPerCheck(); !(a > 1) {
				t.Errorf("measure(%s, %v) allocs/Check = %v; want > 1", s.Name, spec, a)
			}
			if spec.Mode == modeFixed && l.Checks != 200 {
				t.Errorf("measure(%s, %v) checks = %d; want exactly rate×duration = 200", s.Name, spec, l.Checks)
			}
			if got := l.Hist.quantile(0.5); got <= 0 {
				t.Errorf("measure(%s, %v) p50 = %v; want > 0", s.Name, spec, got)
			}
			rows = append(rows, r)
		}
	}

	mem, err := runMemory(ctx, floor, src, len(tokens),
		loadSpec{Mode: modeFixed, Concurrency: 4, Rate: 100, Duration: time.Second, MaxChecks: 1000, CallTimeout: 5 * time.Second},
		250*time.Millisecond)
	if err != nil {
		t.Fatalf("runMemory() error = %v", err)
	}
	// VmHWM is updated lazily by the kernel, so a sample's VmRSS may
	// briefly exceed it: only require both to be present.
	if len(mem.Samples) < 3 || mem.MaxRSS <= 0 || mem.PeakHWM <= 0 {
		t.Errorf("runMemory() samples = %d, max RSS = %d, HWM = %d; want ≥ 3 samples, RSS > 0, HWM > 0", len(mem.Samples), mem.MaxRSS, mem.PeakHWM)
	}
	if mem.Load.Errors != 0 {
		t.Errorf("runMemory() errors = %d; want 0", mem.Load.Errors)
	}

	var out bytes.Buffer
	if err := printTable(&out, rows); err != nil {
		t.Fatalf("printTable() error = %v", err)
	}
	if err := printMemory(&out, mem); err != nil {
		t.Fatalf("printMemory() error = %v", err)
	}
	if s := out.String(); strings.Count(s, "null-proto") < 3 || !strings.Contains(s, "null-vt") || !strings.Contains(s, "1.00") {
		t.Errorf("report = %q; want null-proto and null-vt rows, floor ratio 1.00", s)
	}
	if err := checkClean(rows, mem); err != nil {
		t.Errorf("checkClean() = %v; want nil", err)
	}
}

// startNull must tell "this build has no VT marshalers" (skip the row) from
// a real failure, and must never wait unboundedly for a silent process.
func TestStartNullFailureModes(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("uses /bin/sh scripts and Pdeathsig")
	}
	tests := []struct {
		name   string
		script string
		want   func(error) bool
		desc   string
	}{
		{"exit 2 → errNoVT, the row is skipped", "echo 'no vt' >&2; exit 2",
			func(err error) bool { return errors.Is(err, errNoVT) }, "errNoVT"},
		{"exit 1 → error carrying the log tail", "echo 'bind: address in use' >&2; exit 1",
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "address in use") }, "error with log tail"},
		{"silent process → bounded timeout, process stopped", "exec sleep 30",
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "no address line") }, "timeout error"},
		{"non-loopback address line → error", "echo 'grpc=10.0.0.1:1 http=127.0.0.1:2'; exec sleep 30",
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "loopback") }, "loopback error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			bin := filepath.Join(dir, "fake")
			if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err := startNull(t.Context(), http.DefaultClient, bin, "vt", filepath.Join(dir, "log"), 500*time.Millisecond)
			if !tt.want(err) {
				t.Errorf("startNull(%s) error = %v; want %s", tt.script, err, tt.desc)
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("startNull(%s) took %v; want bounded by ready timeout + stop grace", tt.script, d)
			}
		})
	}
}
