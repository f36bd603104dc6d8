package policy

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// evalPool runs evaluations on long-lived goroutines.
//
// OPA's evaluator recurses deeply. gRPC runs a Check on a fresh goroutine
// whenever its stream workers are not parked at that very moment (on a
// 2-core machine under load: most of the time), and a fresh goroutine
// starts with a few KiB of stack: every evaluation then grew its stack by
// repeated copying, which profiled at over a third of a Check's CPU. A pool
// goroutine keeps its grown stack from one evaluation to the next (the GC
// halves an idle stack at most once per cycle), at the price of one
// hand-off each way.
//
// Measured alternatives (same machine, same run, server CPU per policy
// Check at 64 concurrent Checks, do-nothing floor ~30 us): inline
// evaluation ~108 us; inline after growing the stack once by 48 KiB
// (growStack) ~60 us for a small RBAC policy but ~120 us for a route-table
// policy that recurses deeper; this pool ~62 and ~90 us. The pool's
// hand-off wakes a parked goroutine, which on an idle machine adds
// latency (an in-process serial benchmark: 30 us inline, 53 us pooled);
// under load, where CPU is what runs out, the pool wins.
type evalPool struct {
	jobs chan *evalJob
	quit chan struct{}
	once sync.Once
	stop sync.Once
	size int
}

type evalJob struct {
	ctx     context.Context
	q       *query
	input   ast.Value
	timeout time.Duration
	res     Result
	err     error
	done    chan struct{}
}

var jobs = sync.Pool{New: func() any { return &evalJob{done: make(chan struct{}, 1)} }}

func newEvalPool() *evalPool {
	// Evaluations are CPU-bound, but a policy may block (http.send):
	// keep enough goroutines that a few slow ones cannot starve the rest.
	return &evalPool{jobs: make(chan *evalJob), quit: make(chan struct{}), size: max(16, 8*runtime.GOMAXPROCS(0))}
}

// eval runs q inline when the machine has room, else on a pool goroutine;
// after close it always runs inline.
func (p *evalPool) eval(ctx context.Context, q *query, input ast.Value, timeout time.Duration) (Result, error) {
	p.once.Do(p.start)
	j := jobs.Get().(*evalJob)
	j.ctx, j.q, j.input, j.timeout = ctx, q, input, timeout
	select {
	case p.jobs <- j:
	case <-p.quit:
		j.ctx, j.q, j.input = nil, nil, nil
		jobs.Put(j)
		return q.eval(ctx, input, timeout)
	case <-ctx.Done():
		j.ctx, j.q, j.input = nil, nil, nil
		jobs.Put(j)
		return Result{}, callerErr(ctx.Err())
	}
	// The evaluation is bounded by its own timeout and by ctx, so the
	// worker always answers.
	<-j.done
	res, err := j.res, j.err
	*j = evalJob{done: j.done}
	jobs.Put(j)
	return res, err
}

func (p *evalPool) start() {
	for range p.size {
		go p.work()
	}
}

func (p *evalPool) work() {
	for {
		select {
		case j := <-p.jobs:
			j.res, j.err = j.q.eval(j.ctx, j.input, j.timeout)
			j.done <- struct{}{}
		case <-p.quit:
			return
		}
	}
}

// close stops the workers; later evaluations run inline.
func (p *evalPool) close() { p.stop.Do(func() { close(p.quit) }) }
