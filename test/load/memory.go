package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// memResult is the memory scenario's outcome: RSS over time under a stream
// of distinct tokens, which is what would expose an unbounded verification
// cache or per-token leak.
type memResult struct {
	Server  string
	Tokens  int
	Spec    loadSpec
	Samples []memSample
	MaxRSS  int64 // largest sampled VmRSS
	PeakHWM int64 // VmHWM at the end: the kernel's peak, including between samples
	Load    *loadResult
}

// runMemory drives t with spec (whose request source should hold many
// distinct tokens) and samples the server's RSS at start, every interval,
// and once after the load ends. The sampling loop ends with the load, which
// is itself bounded by spec.
func runMemory(ctx context.Context, t *target, src *requestSource, tokens int, spec loadSpec, interval time.Duration) (*memResult, error) {
	if t.PID <= 0 {
		return nil, errors.New("memory scenario needs the server PID")
	}
	if interval <= 0 {
		return nil, fmt.Errorf("sample interval %v: must be > 0", interval)
	}
	out := &memResult{Server: t.Name, Tokens: tokens, Spec: spec}
	start := time.Now()
	sample := func() error {
		rss, hwm, err := procMem(t.PID)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		out.Samples = append(out.Samples, memSample{At: time.Since(start), RSS: rss, HWM: hwm})
		out.MaxRSS = max(out.MaxRSS, rss)
		out.PeakHWM = hwm
		return nil
	}
	if err := sample(); err != nil {
		return nil, err
	}

	type loadDone struct {
		res *loadResult
		err error
	}
	done := make(chan loadDone, 1)
	go func() {
		res, err := runLoad(ctx, t.clients, src, spec)
		done <- loadDone{res, err}
	}()

	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case d := <-done:
			out.Load = d.res
			if d.err != nil {
				return out, d.err
			}
			// A closing sample shows where RSS ended, unless the ticker
			// just took one.
			if last := out.Samples[len(out.Samples)-1].At; time.Since(start)-last < min(interval/2, time.Second) {
				return out, nil
			}
			return out, sample()
		case <-tick.C:
			if err := sample(); err != nil {
				// Keep waiting for the load goroutine so it never outlives
				// this call.
				<-done
				return out, err
			}
		}
	}
}
