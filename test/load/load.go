package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/internal/vtcodec"
	"github.com/tollgate-dev/tollgate/test/load/internal/loopback"
)

// target is one ext_authz server under test, what to send it, and what is
// known about it for cost accounting.
type target struct {
	Name       string
	Addr       string // gRPC host:port, loopback only
	MetricsURL string // "" disables allocation accounting
	PID        int    // 0 disables server CPU and RSS accounting
	// Src is the traffic runMatrix sends: bearer JWTs, or session cookies.
	Src *requestSource
	// Redis is the Redis the server uses; nil disables Redis accounting.
	Redis *redisProbe

	conns   []*grpc.ClientConn
	clients []authv3.AuthorizationClient
}

// dial opens n independent HTTP/2 connections. Workers are spread over them
// round-robin, as Envoy spreads ext_authz calls over a small pool; one
// connection would serialise everything on one server reader goroutine.
func (t *target) dial(ctx context.Context, n int) error {
	if err := loopback.CheckHostPort(t.Addr); err != nil {
		return err
	}
	if t.MetricsURL != "" {
		if err := loopback.CheckURL(t.MetricsURL); err != nil {
			return err
		}
	}
	for range max(n, 1) {
		// passthrough skips the DNS resolver; the address is a literal.
		cc, err := grpc.NewClient("passthrough:///"+t.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// The client codec only changes how requests are encoded (same
			// bytes in meaning); it keeps the generator's own CPU low when
			// built with -tags vtprotobuf.
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(vtcodec.Codec())),
		)
		if err != nil {
			t.close()
			return fmt.Errorf("%s: dial %s: %w", t.Name, t.Addr, err)
		}
		t.conns = append(t.conns, cc)
		t.clients = append(t.clients, authv3.NewAuthorizationClient(cc))
		if err := waitConnReady(ctx, cc, 5*time.Second); err != nil {
			t.close()
			return fmt.Errorf("%s: connect %s: %w", t.Name, t.Addr, err)
		}
	}
	return nil
}

func waitConnReady(ctx context.Context, cc *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("still %v: %w", s, ctx.Err())
		}
	}
}

func (t *target) close() {
	for _, cc := range t.conns {
		_ = cc.Close()
	}
	t.conns, t.clients = nil, nil
}

type loadMode string

const (
	modeClosed loadMode = "closed"
	modeFixed  loadMode = "fixed"
)

// loadSpec describes one bounded run.
type loadSpec struct {
	Mode loadMode
	// Concurrency is the number of workers. Closed loop: calls in flight.
	// Fixed rate: the most calls that can be in flight; sends beyond that
	// wait, and the wait is charged to their latency.
	Concurrency int
	Rate        float64 // fixed rate only: intended Checks per second
	Duration    time.Duration
	// MaxChecks caps the number of calls whatever the duration, so no loop
	// is bounded by time alone.
	MaxChecks int64
	// CallTimeout is the per-call deadline, like Envoy's ext_authz timeout
	// (200 ms by default there). It is sent as grpc-timeout, so the server
	// pays for a deadline per call exactly as it would behind Envoy. 0 means
	// no deadline.
	CallTimeout time.Duration
}

func (s loadSpec) String() string {
	if s.Mode == modeFixed {
		return fmt.Sprintf("fixed %g/s", s.Rate)
	}
	return fmt.Sprintf("closed c=%d", s.Concurrency)
}

func (s loadSpec) validate() error {
	var errs []error
	if s.Mode != modeClosed && s.Mode != modeFixed {
		errs = append(errs, fmt.Errorf("mode %q: want closed or fixed", s.Mode))
	}
	if s.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be ≥ 1", s.Concurrency))
	}
	if s.Mode == modeFixed && !(s.Rate > 0 && s.Rate <= 1e7) {
		errs = append(errs, fmt.Errorf("rate %g: must be in (0, 1e7]", s.Rate))
	}
	if s.Duration <= 0 || s.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("duration %v: must be in (0, 24h]", s.Duration))
	}
	if s.MaxChecks < 1 {
		errs = append(errs, fmt.Errorf("max checks %d: must be ≥ 1", s.MaxChecks))
	}
	return errors.Join(errs...)
}

// loadResult is what the client saw during one run.
type loadResult struct {
	Checks  int64
	Errors  int64 // gRPC errors, including deadline exceeded
	NonOK   int64 // answered, but CheckResponse.status.code != OK
	Elapsed time.Duration
	Hist    *histogram
	// Lag is, at a fixed rate only, how late each send left relative to its
	// due time. It is already included in Hist; it is kept apart so a tail
	// caused by the generator's own scheduling (or too few workers) can be
	// told from a slow server.
	Lag      *histogram
	FirstErr error // one example, for the report
}

func (r *loadResult) rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Checks) / r.Elapsed.Seconds()
}

// worker is one load goroutine's private state; nothing in it is shared, so
// recording costs no synchronisation.
type worker struct {
	id       int
	client   authv3.AuthorizationClient
	reqs     *reqBuilder
	hist     histogram
	lag      histogram
	checks   int64
	errs     int64
	nonOK    int64
	firstErr error
}

// call sends one Check and charges its latency from since: the send time in
// closed loop, the intended send time at a fixed rate.
func (w *worker) call(ctx context.Context, i uint64, since time.Time, timeout time.Duration) {
	req := w.reqs.at(i)
	cctx, cancel := ctx, context.CancelFunc(nil)
	if timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, timeout)
	}
	resp, err := w.client.Check(cctx, req)
	lat := time.Since(since)
	if cancel != nil {
		cancel()
	}
	w.hist.record(lat)
	w.checks++
	switch {
	case err != nil:
		w.errs++
		if w.firstErr == nil {
			w.firstErr = err
		}
	case resp.GetStatus().GetCode() != 0:
		w.nonOK++
	}
}

// runLoad runs one bounded load phase against clients. Calls in flight when
// the duration ends are allowed to finish (they are not cancelled, so the
// tail is not polluted with artificial errors); they are bounded by
// CallTimeout or by ctx.
func runLoad(ctx context.Context, clients []authv3.AuthorizationClient, src *requestSource, spec loadSpec) (*loadResult, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if len(clients) == 0 {
		return nil, errors.New("no connections")
	}
	workers := make([]*worker, spec.Concurrency)
	for i := range workers {
		workers[i] = &worker{id: i, client: clients[i%len(clients)], reqs: src.builder(i)}
	}

	var wg sync.WaitGroup
	start := time.Now()
	switch spec.Mode {
	case modeClosed:
		end := start.Add(spec.Duration)
		perWorker := ceilDiv(spec.MaxChecks, int64(len(workers)))
		for _, w := range workers {
			wg.Go(func() { w.closedLoop(ctx, end, perWorker, len(workers), spec.CallTimeout) })
		}
	case modeFixed:
		total := min(int64(spec.Rate*spec.Duration.Seconds()), spec.MaxChecks)
		interval := float64(time.Second) / spec.Rate
		for _, w := range workers {
			wg.Go(func() { w.fixedRate(ctx, start, interval, total, len(workers), spec.CallTimeout) })
		}
	}
	wg.Wait()

	res := &loadResult{Elapsed: time.Since(start), Hist: new(histogram), Lag: new(histogram)}
	for _, w := range workers {
		res.Checks += w.checks
		res.Errors += w.errs
		res.NonOK += w.nonOK
		res.Hist.merge(&w.hist)
		res.Lag.merge(&w.lag)
		if res.FirstErr == nil {
			res.FirstErr = w.firstErr
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

// closedLoop sends back-to-back until end or maxChecks. Worker w of n sends
// global indices w, w+n, w+2n…, so workers cycle tokens without sharing a
// counter.
func (w *worker) closedLoop(ctx context.Context, end time.Time, maxChecks int64, n int, timeout time.Duration) {
	for k := range maxChecks {
		t0 := time.Now()
		if !t0.Before(end) || ctx.Err() != nil {
			return
		}
		w.call(ctx, uint64(w.id)+uint64(k)*uint64(n), t0, timeout)
	}
}

// fixedRate is open-loop scheduling: send i is due at start + i*interval no
// matter how long earlier sends took, and its latency is measured from that
// due time. A slow response therefore delays this worker's next send and the
// delay shows up in the next latency instead of silently lowering the
// offered load (coordinated omission). Sends are striped over the workers
// (worker w owns i ≡ w mod n).
func (w *worker) fixedRate(ctx context.Context, start time.Time, interval float64, total int64, n int, timeout time.Duration) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := int64(w.id); i < total; i += int64(n) {
		due := start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		w.lag.record(time.Since(due))
		w.call(ctx, uint64(i), due, timeout)
	}
}

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return a
	}
	return (a + b - 1) / b
}

// runResult is one row of the report: the client's view plus the server's
// cost over exactly the measured window.
type runResult struct {
	Server string
	Spec   loadSpec
	Load   *loadResult

	ServerCPU time.Duration // 0 with HaveCPU false when the PID is unknown
	HaveCPU   bool
	Mallocs   float64 // server heap allocations during the window, scrape cost removed
	HaveAlloc bool
	ClientCPU time.Duration

	// RedisRT is the server's own count of Redis round trips in the
	// window (tollgate_session_redis_round_trips_total), HaveRT false
	// when it exports none.
	RedisRT float64
	HaveRT  bool
	// Redis is what Redis itself counted in the window (INFO
	// commandstats, the probe's own INFO removed) and its CPU; HaveRedis
	// false without a probe.
	Redis     redisDelta
	HaveRedis bool
}

// add accumulates another slice of the same phase on the same server.
func (r *runResult) add(o runResult) {
	if r.Load == nil {
		*r = o
		return
	}
	l, ol := r.Load, o.Load
	l.Checks += ol.Checks
	l.Errors += ol.Errors
	l.NonOK += ol.NonOK
	l.Elapsed += ol.Elapsed
	l.Hist.merge(ol.Hist)
	l.Lag.merge(ol.Lag)
	if l.FirstErr == nil {
		l.FirstErr = ol.FirstErr
	}
	r.ServerCPU += o.ServerCPU
	r.HaveCPU = r.HaveCPU && o.HaveCPU
	r.Mallocs += o.Mallocs
	r.HaveAlloc = r.HaveAlloc && o.HaveAlloc
	r.ClientCPU += o.ClientCPU
	r.RedisRT += o.RedisRT
	r.HaveRT = r.HaveRT && o.HaveRT
	r.HaveRedis = r.HaveRedis && o.HaveRedis
	r.Redis.Calls += o.Redis.Calls
	r.Redis.CPU += o.Redis.CPU
	r.Redis.HasCPU = r.Redis.HasCPU && o.Redis.HasCPU
	if len(o.Redis.ByCmd) > 0 {
		byCmd := maps.Clone(r.Redis.ByCmd)
		if byCmd == nil {
			byCmd = map[string]float64{}
		}
		for k, v := range o.Redis.ByCmd {
			byCmd[k] += v
		}
		r.Redis.ByCmd = byCmd
	}
}

func (r runResult) perCheck(v float64) float64 {
	if r.Load == nil || r.Load.Checks == 0 {
		return math.NaN()
	}
	return v / float64(r.Load.Checks)
}

// ServerCPUPerCheck is server CPU µs per Check, NaN when unknown.
func (r runResult) ServerCPUPerCheck() float64 {
	if !r.HaveCPU {
		return math.NaN()
	}
	return r.perCheck(float64(r.ServerCPU) / float64(time.Microsecond))
}

// AllocsPerCheck is server heap allocations per Check, NaN when unknown.
func (r runResult) AllocsPerCheck() float64 {
	if !r.HaveAlloc {
		return math.NaN()
	}
	return r.perCheck(r.Mallocs)
}

// ClientCPUPerCheck is this process's CPU µs per Check.
func (r runResult) ClientCPUPerCheck() float64 {
	return r.perCheck(float64(r.ClientCPU) / float64(time.Microsecond))
}

// RedisRTPerCheck is Redis round trips per Check as the server counted
// them, NaN when unknown.
func (r runResult) RedisRTPerCheck() float64 {
	if !r.HaveRT {
		return math.NaN()
	}
	return r.perCheck(r.RedisRT)
}

// RedisCallsPerCheck is Redis commands per Check from INFO commandstats,
// including the commands Lua scripts run inside Redis; NaN without a probe.
func (r runResult) RedisCallsPerCheck() float64 {
	if !r.HaveRedis {
		return math.NaN()
	}
	return r.perCheck(r.Redis.Calls)
}

// RedisCPUPerCheck is redis-server CPU µs per Check, NaN when unknown.
func (r runResult) RedisCPUPerCheck() float64 {
	if !r.HaveRedis || !r.Redis.HasCPU {
		return math.NaN()
	}
	return r.perCheck(float64(r.Redis.CPU) / float64(time.Microsecond))
}

// redisByCmd formats the per-command Redis calls per Check, busiest
// first, for the log.
func (r runResult) redisByCmd() string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	for k, v := range r.Redis.ByCmd {
		l = append(l, kv{k, v})
	}
	slices.SortFunc(l, func(a, b kv) int { return cmp.Or(cmp.Compare(b.v, a.v), cmp.Compare(a.k, b.k)) })
	var sb strings.Builder
	for i, e := range l {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%s=%s", e.k, fmtFloat(r.perCheck(e.v), 3))
	}
	return sb.String()
}

// measure runs a warm-up phase (same spec, not recorded), then the measured
// phase, reading the server's CPU and allocation counters right around it.
//
// Scraping /metrics allocates in the server too. Two back-to-back scrapes
// before the run measure that cost, and it is subtracted: the window between
// the second scrape's counter read and the third's contains the rest of one
// scrape plus the start of another, the same shape as the calibration pair.
func measure(ctx context.Context, hc *http.Client, t *target, src *requestSource, spec loadSpec, warmup time.Duration) (runResult, error) {
	r := runResult{Server: t.Name, Spec: spec}
	if warmup > 0 {
		w := spec
		w.Duration = warmup
		if _, err := runLoad(ctx, t.clients, src, w); err != nil {
			return r, fmt.Errorf("%s %v warm-up: %w", t.Name, spec, err)
		}
	}

	var m0, m1 serverCounters
	if t.MetricsURL != "" {
		var err error
		if m0, err = scrapeCounters(ctx, hc, t.MetricsURL); err != nil {
			return r, err
		}
		if m1, err = scrapeCounters(ctx, hc, t.MetricsURL); err != nil {
			return r, err
		}
	}
	var redis0 redisSnapshot
	if t.Redis != nil {
		var err error
		if redis0, err = t.Redis.snapshot(ctx); err != nil {
			return r, err
		}
	}
	var cpu0 time.Duration
	if t.PID > 0 {
		var err error
		if cpu0, err = procCPU(t.PID); err != nil {
			return r, err
		}
	}
	self0, err := selfCPU()
	if err != nil {
		return r, err
	}

	res, err := runLoad(ctx, t.clients, src, spec)
	if err != nil {
		return r, fmt.Errorf("%s %v: %w", t.Name, spec, err)
	}
	r.Load = res

	self1, err := selfCPU()
	if err != nil {
		return r, err
	}
	r.ClientCPU = self1 - self0
	if t.PID > 0 {
		cpu1, err := procCPU(t.PID)
		if err != nil {
			return r, err
		}
		r.ServerCPU, r.HaveCPU = cpu1-cpu0, true
	}
	if t.Redis != nil {
		redis1, err := t.Redis.snapshot(ctx)
		if err != nil {
			return r, err
		}
		r.Redis, r.HaveRedis = redis0.delta(redis1), true
	}
	if t.MetricsURL != "" {
		m2, err := scrapeCounters(ctx, hc, t.MetricsURL)
		if err != nil {
			return r, err
		}
		r.Mallocs, r.HaveAlloc = max(m2.Mallocs-m1.Mallocs-(m1.Mallocs-m0.Mallocs), 0), true
		if m1.HaveRT && m2.HaveRT {
			r.RedisRT, r.HaveRT = m2.RedisRT-m1.RedisRT, true
		}
	}
	return r, nil
}
