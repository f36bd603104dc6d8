package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Buckets must tile the value range with no gaps or overlaps, or quantiles
// would skip values.
func TestBucketsAreContiguous(t *testing.T) {
	t.Parallel()
	for i := range numBuckets - 1 {
		up := bucketUpper(i)
		if got := bucketOf(up); got != i {
			t.Fatalf("bucketOf(bucketUpper(%d)=%d) = %d; want %d", i, up, got, i)
		}
		if got := bucketOf(up + 1); got != i+1 {
			t.Fatalf("bucketOf(bucketUpper(%d)+1=%d) = %d; want %d", i, up+1, got, i+1)
		}
	}
	if got := bucketOf(1 << 62); got != numBuckets-1 {
		t.Errorf("bucketOf(2^62) = %d; want last bucket %d", got, numBuckets-1)
	}
}

func TestQuantileWithinOnePercent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform 50µs–5ms", func(r *rand.Rand) time.Duration {
			return 50*time.Microsecond + time.Duration(r.Int64N(int64(5*time.Millisecond)))
		}},
		{"exponential, mean 300µs", func(r *rand.Rand) time.Duration {
			return time.Duration(r.ExpFloat64() * float64(300*time.Microsecond))
		}},
		{"tiny values under 128ns are exact", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(128)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(1, 2))
			// Record into two histograms and merge, as workers do.
			var a, b histogram
			vals := make([]time.Duration, 100_000)
			for i := range vals {
				vals[i] = tt.gen(r)
				if i%2 == 0 {
					a.record(vals[i])
				} else {
					b.record(vals[i])
				}
			}
			a.merge(&b)
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				idx := max(int(float64(len(vals))*q+0.999999)-1, 0)
				want := vals[idx]
				got := a.quantile(q)
				if got < want || float64(got-want) > 0.01*float64(want)+1 {
					t.Errorf("quantile(%v) = %v; want %v (+≤1%%)", q, got, want)
				}
			}
			if got, want := time.Duration(a.max), vals[len(vals)-1]; got != want {
				t.Errorf("max = %v; want exact %v", got, want)
			}
			if a.n != uint64(len(vals)) {
				t.Errorf("n = %d; want %d", a.n, len(vals))
			}
		})
	}
}

func TestEmptyHistogram(t *testing.T) {
	t.Parallel()
	var h histogram
	if got := h.quantile(0.99); got != 0 {
		t.Errorf("empty quantile(0.99) = %v; want 0", got)
	}
	h.record(-time.Second) // clock went backwards: clamp, don't panic
	if got := h.quantile(1); got != 0 {
		t.Errorf("quantile after negative record = %v; want 0", got)
	}
}

// Slices of one phase must add up as if they were one run.
func TestRunResultAddSumsSlices(t *testing.T) {
	t.Parallel()
	slice := func(checks int64, lat time.Duration, cpu time.Duration, mallocs float64) runResult {
		h, lag := new(histogram), new(histogram)
		for range checks {
			h.record(lat)
		}
		return runResult{
			Server:    "null-proto",
			Spec:      loadSpec{Mode: modeClosed, Concurrency: 16},
			Load:      &loadResult{Checks: checks, Errors: 1, Elapsed: time.Second, Hist: h, Lag: lag},
			ServerCPU: cpu, HaveCPU: true,
			Mallocs: mallocs, HaveAlloc: true,
			ClientCPU: cpu / 2,
		}
	}
	var acc runResult
	acc.add(slice(1000, 100*time.Microsecond, 30*time.Millisecond, 120_000))
	acc.add(slice(3000, 300*time.Microsecond, 90*time.Millisecond, 360_000))

	if got, want := acc.Load.Checks, int64(4000); got != want {
		t.Errorf("Checks = %d; want %d", got, want)
	}
	if got, want := acc.Load.Errors, int64(2); got != want {
		t.Errorf("Errors = %d; want %d", got, want)
	}
	if got, want := acc.Load.rate(), 2000.0; got != want {
		t.Errorf("rate() = %v; want %v", got, want)
	}
	if got, want := acc.ServerCPUPerCheck(), 30.0; got != want {
		t.Errorf("ServerCPUPerCheck() = %v; want %v", got, want)
	}
	if got, want := acc.AllocsPerCheck(), 120.0; got != want {
		t.Errorf("AllocsPerCheck() = %v; want %v", got, want)
	}
	if got := acc.Load.Hist.quantile(0.5); got < 300*time.Microsecond || got > 303*time.Microsecond {
		t.Errorf("merged p50 = %v; want ≈300µs (3000 of 4000 samples)", got)
	}
	var partial runResult
	partial.add(slice(10, time.Millisecond, time.Millisecond, 1))
	noCPU := slice(10, time.Millisecond, 0, 1)
	noCPU.HaveCPU = false
	partial.add(noCPU)
	if !math.IsNaN(partial.ServerCPUPerCheck()) {
		t.Errorf("ServerCPUPerCheck() with one slice lacking CPU = %v; want NaN", partial.ServerCPUPerCheck())
	}
}
