package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// ErrNotLoaded is the cause of a PolicyError when no policy has been
// compiled yet: a bundle-only engine before its first download.
var ErrNotLoaded = errors.New("no policy loaded yet")

// ErrTimeout is the cause of a PolicyTimeout when an evaluation ran longer
// than Config.Timeout. It does not wrap context.DeadlineExceeded: the
// policy was slow, not the caller.
var ErrTimeout = errors.New("policy evaluation exceeded its timeout")

// EvalError is the cause of a PolicyError raised by OPA during evaluation,
// e.g. a complete rule with conflicting values, or a wrongly typed decision.
type EvalError struct {
	// Code is OPA's error code (eval_conflict_error, …) or
	// "invalid_decision" for a result that is not a decision.
	Code string
	// Location is file:line of the rule or expression when OPA gives one.
	Location string
	Message  string
}

func (e *EvalError) Error() string {
	if e.Location != "" {
		return e.Location + ": " + e.Code + ": " + e.Message
	}
	return e.Code + ": " + e.Message
}

// Option configures optional dependencies of an Engine.
type Option func(*Engine)

// WithLogger sets the logger for reloads, bundle downloads and watcher
// problems. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithRegisterer registers the policy metrics with r. Default: none (the
// metrics are kept but not exported).
func WithRegisterer(r prometheus.Registerer) Option { return func(e *Engine) { e.reg = r } }

// WithClock sets the clock of decision-log timestamps, evaluation times
// and reload times. Default time.Now.
func WithClock(now func() time.Time) Option { return func(e *Engine) { e.now = now } }

// WithHTTPClient sets the client that downloads bundles. Default: a client
// with a 30s overall timeout and the default transport.
func WithHTTPClient(c *http.Client) Option { return func(e *Engine) { e.http = c } }

// Engine evaluates compiled Rego policies. It is safe for concurrent use:
// Eval only loads the current compiled generation through an atomic
// pointer; reloads build a complete new generation and swap it in only
// when it compiled (and passed its tests).
type Engine struct {
	cfg      Config
	regoVer  ast.RegoVersion
	redact   bool
	log      *slog.Logger
	reg      prometheus.Registerer
	now      func() time.Time
	http     *http.Client
	metrics  *metrics
	dlog     *decisionLog
	pool     *evalPool
	cur      atomic.Pointer[generation]
	status   atomic.Pointer[Status]
	reloadMu sync.Mutex     // serialises builds and guards the fields below
	bundle   *bundle.Bundle // the bundle in the serving generation
	nextID   uint64

	life    sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
	watch   *watcher
	poll    *bundlePoller
}

// New validates cfg, loads and compiles the policies of cfg.Paths and
// prepares one query per distinct decision. A compile error names
// file:line. With a bundle and no paths, New succeeds with no policy
// loaded: Eval fails with ErrNotLoaded until Start's first download.
func New(cfg Config, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	cfg = cfg.withDefaults()
	ver, _ := regoVersion(cfg.RegoVersion)
	e := &Engine{
		cfg:     cfg,
		pool:    newEvalPool(),
		regoVer: ver,
		redact:  !cfg.ExposeCredentials,
		log:     slog.Default(),
		now:     time.Now,
	}
	for _, o := range opts {
		o(e)
	}
	if e.log == nil || e.now == nil {
		return nil, errors.New("policy: nil logger or clock option")
	}
	if e.http == nil {
		e.http = &http.Client{Timeout: 30 * time.Second}
	}
	var err error
	if e.metrics, err = newMetrics(e.reg, e.cachedDecisions); err != nil {
		return nil, err
	}
	st := &Status{}
	if cfg.Bundle != nil {
		st.Bundle = &BundleStatus{}
	}
	e.status.Store(st)
	if len(cfg.Paths) > 0 {
		if err := e.reload(context.Background(), "initial", nil); err != nil {
			return nil, err
		}
	}
	if cfg.DecisionLog.Enabled {
		if e.dlog, err = openDecisionLog(cfg.DecisionLog.Path); err != nil {
			return nil, fmt.Errorf("policy: decision log: %w", err)
		}
	}
	return e, nil
}

// QueryInfo describes one prepared query, for `tollgate check`.
type QueryInfo struct {
	Query string
	// Cached is true when the query's decisions are cached; KeyedBy then
	// lists the input paths that key them. Otherwise Uncached says why
	// (file:line), or is "disabled".
	Cached   bool
	KeyedBy  []string
	Uncached string
}

// Check loads and compiles everything cfg names, runs the Rego tests when
// TestOnReload is set, and returns the first problem with its file:line,
// or what it found about each query. It opens no file for writing and
// downloads nothing. `tollgate check` uses it.
func Check(cfg Config) ([]QueryInfo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	cfg = cfg.withDefaults()
	if len(cfg.Paths) == 0 {
		return nil, nil
	}
	g, err := build(context.Background(), cfg, nil, 0)
	if err != nil {
		return nil, err
	}
	infos := make([]QueryInfo, 0, len(g.queries))
	for _, q := range g.queries {
		qi := QueryInfo{Query: q.text, Cached: q.cache != nil, Uncached: q.deps.Uncacheable}
		switch {
		case qi.Cached:
			qi.KeyedBy = q.deps.Refs()
		case cfg.DecisionCache.Disabled:
			qi.Uncached = "disabled"
		}
		infos = append(infos, qi)
	}
	return infos, nil
}

// Start watches cfg.Paths for changes and, when configured, starts polling
// the bundle server. The watcher is set up before Start returns, so a path
// that cannot be watched is an error; downloads happen in the background.
func (e *Engine) Start(ctx context.Context) error {
	e.life.Lock()
	defer e.life.Unlock()
	if e.started || e.stopped {
		return errors.New("policy: engine already started or stopped")
	}
	var w *watcher
	if len(e.cfg.Paths) > 0 {
		var err error
		if w, err = newWatcher(e.cfg.Paths, e.cfg.WatchDebounce, e.log); err != nil {
			return fmt.Errorf("policy: watch: %w", err)
		}
	}
	var p *bundlePoller
	if e.cfg.Bundle != nil {
		var err error
		if p, err = newBundlePoller(e, *e.cfg.Bundle); err != nil {
			if w != nil {
				w.close()
			}
			return fmt.Errorf("policy: bundle: %w", err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel, e.done, e.watch, e.poll, e.started = cancel, make(chan struct{}), w, p, true
	var wg sync.WaitGroup
	if w != nil {
		wg.Go(func() {
			w.run(runCtx, func() {
				if err := e.reload(runCtx, "files", nil); err != nil && runCtx.Err() == nil {
					e.log.Error("policy reload failed; the previous policy keeps serving", "error", err.Error())
				}
			})
		})
	}
	if p != nil {
		wg.Go(func() { p.run(runCtx) })
	}
	if e.dlog != nil {
		wg.Go(func() { e.dlog.flushLoop(runCtx) })
	}
	go func() { wg.Wait(); close(e.done) }()
	return nil
}

// Stop ends the watcher and the bundle poller, waiting for them until
// ctx is done, then flushes and closes the decision log. It is safe to
// call without Start and more than once. In-flight Evals are not
// interrupted.
func (e *Engine) Stop(ctx context.Context) error {
	e.life.Lock()
	defer e.life.Unlock()
	if e.stopped {
		return nil
	}
	e.stopped = true
	e.pool.close()
	var err error
	if e.started {
		e.cancel()
		select {
		case <-e.done:
		case <-ctx.Done():
			err = fmt.Errorf("policy: stop: %w", ctx.Err())
		}
		if e.watch != nil {
			e.watch.close()
		}
	}
	if e.dlog != nil {
		err = errors.Join(err, e.dlog.close())
	}
	return err
}

// Reload re-reads cfg.Paths (with the current bundle, if any) and swaps
// the new policy in if it compiles and, with TestOnReload, passes its
// tests. On error the previous policy keeps serving. SIGHUP calls this.
func (e *Engine) Reload(ctx context.Context) error {
	return e.reload(ctx, "manual", nil)
}

// reload builds a new generation from the files and either b (a newly
// downloaded bundle) or the bundle already serving, and swaps it in.
func (e *Engine) reload(ctx context.Context, trigger string, b *bundle.Bundle) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if b == nil {
		b = e.bundle
	}
	start := e.now()
	g, err := build(ctx, e.cfg, b, e.nextID+1)
	st := *e.status.Load()
	st.LastReload = start
	if err != nil {
		err = fmt.Errorf("policy: %w", err)
		st.LastError = err.Error()
		e.status.Store(&st)
		e.metrics.reloads.WithLabelValues("failure").Inc()
		return err
	}
	for _, w := range g.warnings {
		e.log.Warn("policy query has no rule or document", "query", w)
	}
	for _, q := range g.queries {
		switch {
		case q.cache != nil:
			e.log.Info("policy decisions are cached", "query", q.text, "keyed_by", q.deps.String())
		case e.cfg.DecisionCache.Disabled:
		default:
			e.log.Info("policy decisions are not cached", "query", q.text, "because", q.deps.Uncacheable)
		}
	}
	e.nextID++
	e.bundle = b
	e.cur.Store(g)
	st.Ready, st.Generation, st.LoadedAt, st.LastError = true, g.id, start, ""
	e.status.Store(&st)
	e.metrics.reloads.WithLabelValues("success").Inc()
	e.metrics.lastSuccess.Set(float64(start.UnixNano()) / 1e9)
	e.log.Info("policy loaded", "generation", g.id, "trigger", trigger,
		"modules", g.modules, "duration", e.now().Sub(start).String())
	return nil
}

// cachedDecisions counts the decisions cached by the serving generation.
func (e *Engine) cachedDecisions() float64 {
	g := e.cur.Load()
	if g == nil {
		return 0
	}
	n := 0
	for _, q := range g.queries {
		if q.cache != nil {
			entries, _ := q.cache.size()
			n += entries
		}
	}
	return float64(n)
}

// Status is a snapshot of the engine's loading state, for /readyz.
type Status struct {
	// Ready is true once a policy has been compiled and is serving.
	Ready bool `json:"ready"`
	// Generation counts successful loads; it is 0 before the first.
	Generation uint64 `json:"generation"`
	// LoadedAt is when the serving generation was built.
	LoadedAt time.Time `json:"loaded_at"`
	// LastReload is when the last load was attempted.
	LastReload time.Time `json:"last_reload"`
	// LastError is the error of the last attempt (file:line: …), "" if it
	// succeeded. A failed attempt leaves the previous generation serving.
	LastError string `json:"last_error"`
	// Bundle is the state of the bundle source, nil without one.
	Bundle *BundleStatus `json:"bundle,omitempty"`
}

// BundleStatus is the state of the bundle source.
type BundleStatus struct {
	ETag         string    `json:"etag"`          // of the bundle serving, "" before the first
	LastDownload time.Time `json:"last_download"` // last successful poll (200 or 304)
	LastError    string    `json:"last_error"`    // of the last poll, "" if it succeeded
}

// Status returns a snapshot of the loading state.
func (e *Engine) Status() Status {
	st := *e.status.Load()
	if st.Bundle != nil {
		b := *st.Bundle
		st.Bundle = &b
	}
	return st
}

func (e *Engine) setBundleStatus(f func(*BundleStatus)) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	st := *e.status.Load()
	var b BundleStatus
	if st.Bundle != nil {
		b = *st.Bundle
	}
	f(&b)
	st.Bundle = &b
	e.status.Store(&st)
}

// Eval evaluates the decision for in's service (its own query, or
// Config.Query) on the current policy, bounded by Config.Timeout.
//
// An undefined decision is a deny with Defined false and a nil error. A
// request that cannot be represented as input (bad percent-encoding, a
// JSON body that does not parse) is denied with HTTPStatus 400 without
// evaluating, as the OPA-Envoy plugin does. Errors carry
// reason.PolicyTimeout (ErrTimeout, or the caller's context error) or
// reason.PolicyError (an *EvalError, or ErrNotLoaded); the Result is then
// the zero value, which denies.
func (e *Engine) Eval(ctx context.Context, in *Input) (Result, error) {
	start := e.now()
	g := e.cur.Load()
	if g == nil {
		err := reason.Wrap(reason.PolicyError, ErrNotLoaded)
		e.logDecision(start, in, "", Result{}, err)
		return Result{}, err
	}
	q := g.queryFor(in.Service.Name)
	if err := ctx.Err(); err != nil {
		err = callerErr(err)
		e.logDecision(start, in, q.text, Result{}, err)
		return Result{}, err
	}
	// A query whose rules read only known input paths gets only those
	// (and, when cached, its decision from the cache); any other query
	// gets the whole document.
	var input ast.Value
	var sc *scratch
	keyed := false
	if q.deps.Uncacheable == "" {
		sc = scratches.Get().(*scratch)
		defer sc.release()
		var ok bool
		if sc.vals, ok = lookupAll(sc.vals[:0], in, q.deps.Paths, e.redact); ok {
			if q.cache != nil {
				if sc.key, keyed = appendKey(sc.key[:0], sc.vals); keyed {
					if res, hit := q.cache.get(sc.key); hit {
						e.metrics.cacheHits.Inc()
						e.logRecord(start, in, q.text, res, nil, true)
						return res, nil
					}
				}
				e.metrics.cacheMisses.Inc()
			}
			input = minimalInput(q.deps.Paths, sc.vals)
		}
	}
	if input == nil {
		var err error
		if input, err = buildInput(in, e.redact); err != nil {
			res := Result{HTTPStatus: http.StatusBadRequest}
			e.logDecision(start, in, q.text, res, err)
			return res, nil
		}
	}
	res, err := e.pool.eval(ctx, q, input, e.cfg.Timeout)
	if err == nil && keyed {
		// Only decisions are cached: an error or a timeout may not
		// happen again.
		q.cache.put(sc.key, res)
	}
	e.logDecision(start, in, q.text, res, err)
	return res, err
}

// scratch is one Eval's key buffer and looked-up values, reused across
// Checks.
type scratch struct {
	key  []byte
	vals []any
}

var scratches = sync.Pool{New: func() any { return &scratch{key: make([]byte, 0, 256), vals: make([]any, 0, 8)} }}

// release drops the request's values (they must not outlive it) and
// returns s to the pool.
func (s *scratch) release() {
	clear(s.vals)
	scratches.Put(s)
}

// query is one prepared decision of a generation.
type query struct {
	text string
	pq   rego.PreparedEvalQuery
	// deps are the input paths the query reads; cache is nil when its
	// decisions are not cached.
	deps  inputDeps
	cache *decisionCache
	// opts are the evaluation options shared by every call: the
	// generation's read transaction, no metrics, the raw result term.
	opts []rego.EvalOption
}

var (
	noMetrics  = rego.EvalMetrics(opametrics.NoOp())
	resultTerm = rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil })
)

// guard cancels one evaluation when its timeout fires or its caller's
// context ends, and remembers which of the two happened.
type guard struct {
	cancel  topdown.Cancel
	expired atomic.Bool
}

func (g *guard) expire() {
	g.expired.Store(true)
	g.cancel.Cancel()
}

func (q *query) eval(ctx context.Context, input ast.Value, timeout time.Duration) (res Result, err error) {
	defer func() {
		// A value OPA cannot convert (say, a claim of a type JSON does
		// not have) panics inside the evaluator: deny, do not crash.
		if r := recover(); r != nil {
			res, err = Result{}, reason.Wrap(reason.PolicyError, &EvalError{Code: "eval_panic", Message: fmt.Sprint(r)})
		}
	}()
	g := &guard{cancel: topdown.NewCancel()}
	t := time.AfterFunc(timeout, g.expire)
	defer t.Stop()
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, g.cancel.Cancel)
		defer stop()
	}
	opts := make([]rego.EvalOption, len(q.opts), len(q.opts)+2)
	copy(opts, q.opts)
	opts = append(opts, rego.EvalParsedInput(input), rego.EvalExternalCancel(g.cancel))
	rs, err := q.pq.Eval(ctx, opts...)
	if err != nil {
		return Result{}, q.evalErr(ctx, g, err, timeout)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Result{}, nil
	}
	if len(rs) > 1 {
		return Result{}, reason.Wrap(reason.PolicyError, &EvalError{
			Code: "invalid_decision", Message: q.text + " produced more than one result",
		})
	}
	t0, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return Result{}, reason.Wrap(reason.PolicyError, &EvalError{
			Code: "invalid_decision", Message: fmt.Sprintf("unexpected result %T", rs[0].Expressions[0].Value),
		})
	}
	res, err = decodeDecision(t0.Value)
	if err != nil {
		return Result{}, reason.Wrap(reason.PolicyError, &EvalError{Code: "invalid_decision", Message: err.Error()})
	}
	return res, nil
}

// callerErr wraps the caller's context error: PolicyTimeout for a
// deadline, PolicyError for a cancellation. errors.Is still finds the
// context error, so the front door can map it as such.
func callerErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return reason.Wrap(reason.PolicyTimeout, err)
	}
	return reason.Wrap(reason.PolicyError, err)
}

func (q *query) evalErr(ctx context.Context, g *guard, err error, timeout time.Duration) error {
	if g.expired.Load() {
		return reason.Wrap(reason.PolicyTimeout, fmt.Errorf("%w (%s) evaluating %s", ErrTimeout, timeout, q.text))
	}
	if cerr := ctx.Err(); cerr != nil {
		return callerErr(cerr)
	}
	var te *topdown.Error
	if errors.As(err, &te) {
		ee := &EvalError{Code: te.Code, Message: te.Message}
		if te.Location != nil {
			ee.Location = te.Location.String()
		}
		return reason.Wrap(reason.PolicyError, ee)
	}
	return reason.Wrap(reason.PolicyError, &EvalError{Code: "eval_error", Message: err.Error()})
}
