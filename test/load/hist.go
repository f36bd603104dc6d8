package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram is a log-linear latency histogram in the style of HdrHistogram:
// each power-of-two range of nanoseconds is split into subCount equal
// buckets, so every recorded value is known to within 1/subCount (< 0.8%)
// whatever its magnitude. Recording is a few integer operations and one
// array increment with no allocation, which keeps the load generator's own
// cost per call negligible. A histogram is owned by one goroutine; merge
// them after the run.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	min    uint64
	max    uint64 // exact, not bucketed
}

const (
	subBits  = 7
	subCount = 1 << subBits
	// maxShift caps the range at 2^(maxShift+subBits+1) ns ≈ 73 min; longer
	// values land in the last bucket (max stays exact).
	maxShift   = 34
	numBuckets = (maxShift + 2) * subCount
)

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // v>>shift is in [subCount, 2*subCount)
	if shift > maxShift {
		return numBuckets - 1
	}
	return (shift+1)*subCount + int(v>>uint(shift)) - subCount
}

// bucketUpper is the largest value that maps to bucket i, the conservative
// ("highest equivalent") value to report for a percentile.
func bucketUpper(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	shift := uint(i/subCount - 1)
	m := uint64(i%subCount + subCount)
	return (m+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// quantile returns the value at quantile q in [0,1]: the upper bound of the
// bucket holding the ceil(q*n)-th smallest value, clamped to the exact max.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
