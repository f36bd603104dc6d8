// Command load is Tollgate's ext_authz load generator and the benchmark
// orchestrator behind `make bench`.
//
// It drives servers with go-control-plane's compiled Authorization client
// over loopback gRPC, because generic tools such as ghz spend about 100 µs of
// client CPU per call and on a 2-core machine would mostly measure
// themselves. Every request is an Envoy-shaped CheckRequest carrying a real
// ES256 bearer token.
//
// Default (orchestrated) mode:
//
//	go run ./test/load -tollgate bin/tollgate -null bin/nullauthz [-duration 10s] [-servers LIST]
//
// starts an in-process JWKS issuer and the server rows of -servers (default
// all): two nullauthz floors (grpc's proto codec and internal/vtcodec) and
// four Tollgate configurations, each its own process with a generated
// config: JWT only; JWT plus a role-based Rego policy; Redis sessions with
// internal-token minting, without and with the local session cache (a
// redis-server of its own, sessions created through the admin API). It
// runs closed-loop and fixed-rate phases against each and prints Checks/s,
// latency percentiles, server CPU µs and allocations per Check, Redis round
// trips, commands and CPU per Check, and each server's CPU relative to the
// null-proto floor, which always runs. A memory phase then cycles 100,000
// distinct tokens through Tollgate and samples its RSS. -tollgate "" skips
// the Tollgate rows.
//
// Ad-hoc mode (-addr) measures an already running server instead; -pid and
// -metrics-url enable the CPU and allocation columns.
//
// Invariants: all traffic goes to loopback addresses (checked, not assumed);
// every phase is bounded in time and in number of calls; every process this
// tool starts is stopped (SIGTERM, then SIGKILL) before it returns. It exits
// non-zero if any Check failed or was denied, since valid tokens must pass.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/test/load/internal/loopback"
)

func main() {
	// The generator shares two cores with the server under test. A lazier
	// GC spends less of them on the client; its heap is small anyway.
	debug.SetGCPercent(400)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, logger)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			logger.Error("load", "err", err)
		}
		os.Exit(1)
	}
}

// options are the parsed flags. Defaults are documented in the flag
// definitions in parseFlags.
type options struct {
	Tollgate    string
	Null        string
	Servers     []string // rows to run, in report order; always holds the floor
	RedisServer string
	Sessions    int

	Duration     time.Duration
	Warmup       time.Duration
	Rounds       int
	Conns        int
	Concurrency  []int
	Rate         float64
	FixedWorkers int
	Tokens       int
	CallTimeout  time.Duration
	MaxChecks    int64
	ReadyTimeout time.Duration

	MemDuration time.Duration
	MemRate     float64
	MemTokens   int
	MemInterval time.Duration

	WorkDir string
	Keep    bool
	JSON    string

	Addr       string
	MetricsURL string
	PID        int
	Token      string
	Name       string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Tollgate, "tollgate", "", `path to the tollgate binary, started as "serve --config FILE"; "" skips Tollgate`)
	fs.StringVar(&o.Null, "null", "", "path to the nullauthz binary; required in orchestrated mode, null-proto is the floor of every row")
	servers := fs.String("servers", strings.Join(allRows, ","), "comma-separated server rows to run; "+floorName+" (the floor) is always added")
	fs.StringVar(&o.RedisServer, "redis-server", defaultRedisServer, "redis-server binary, started on a loopback port for the session rows; missing is an error when they run")
	fs.IntVar(&o.Sessions, "sessions", 1000, "sessions created through the admin API and cycled in the session rows")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured duration of each phase")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured warm-up before each phase, same load shape")
	fs.IntVar(&o.Rounds, "rounds", 2, "split each phase into this many slices alternated across servers, to spread machine noise evenly")
	fs.IntVar(&o.Conns, "conns", 2, "gRPC connections per server; workers are spread over them")
	concurrency := fs.String("concurrency", "16,64", "comma-separated closed-loop concurrencies; empty skips closed loop")
	fs.Float64Var(&o.Rate, "rate", 5000, "fixed-rate phase in Checks/s (open loop, latency from intended send time); 0 skips it")
	fs.IntVar(&o.FixedWorkers, "fixed-workers", 64, "fixed-rate workers = most Checks in flight; a send waiting for a free worker is charged that wait")
	fs.IntVar(&o.Tokens, "tokens", 1000, "distinct tokens (users) cycled in the main phases")
	fs.DurationVar(&o.CallTimeout, "call-timeout", 200*time.Millisecond, "per-Check deadline sent as grpc-timeout, like Envoy's ext_authz timeout (default there 200ms); 0 disables")
	fs.Int64Var(&o.MaxChecks, "max-checks", 20_000_000, "hard cap on Checks per phase, whatever the duration")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 15*time.Second, "how long a started server may take to answer /readyz")
	fs.DurationVar(&o.MemDuration, "memory-duration", 60*time.Second, "memory phase length against Tollgate; 0 disables")
	fs.Float64Var(&o.MemRate, "memory-rate", 3000, "memory phase fixed rate in Checks/s")
	fs.IntVar(&o.MemTokens, "memory-tokens", 100_000, "distinct valid tokens cycled in the memory phase")
	fs.DurationVar(&o.MemInterval, "memory-interval", 5*time.Second, "RSS sampling interval in the memory phase")
	fs.StringVar(&o.WorkDir, "workdir", "", "directory for config and server logs (default: a new temp dir, removed on success unless -keep)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work dir even on success")
	fs.StringVar(&o.JSON, "json", "", "also write results as JSON to this file")
	fs.StringVar(&o.Addr, "addr", "", "ad-hoc mode: gRPC address of an already running server (loopback only); no processes are started")
	fs.StringVar(&o.MetricsURL, "metrics-url", "", "ad-hoc mode: the server's /metrics URL, enables allocs/Check")
	fs.IntVar(&o.PID, "pid", 0, "ad-hoc mode: the server's PID, enables server CPU µs/Check")
	fs.StringVar(&o.Token, "token", "", "ad-hoc mode: bearer token to send (default: tokens minted by an in-process issuer the server will not know)")
	fs.StringVar(&o.Name, "name", "target", "ad-hoc mode: server name in the report")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.Concurrency, err = parseInts(*concurrency); err != nil {
		return nil, fmt.Errorf("-concurrency: %w", err)
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if err := o.selectServers(*servers, explicit["servers"]); err != nil {
		return nil, err
	}
	return o, o.validate()
}

// selectServers sets o.Servers from the -servers list. Without -tollgate the
// Tollgate rows of the default list are dropped; naming one explicitly is
// an error. The floor is added when missing: every row's CPU ×floor needs
// it measured in the same run.
func (o *options) selectServers(list string, explicit bool) error {
	if o.Addr != "" {
		if explicit {
			return errors.New("-servers selects orchestrated rows; it cannot be combined with -addr")
		}
		return nil
	}
	rows, err := parseServers(list)
	if err != nil {
		return fmt.Errorf("-servers: %w", err)
	}
	if o.Tollgate == "" {
		var kept []string
		for _, r := range rows {
			if isNullRow(r) {
				kept = append(kept, r)
			} else if explicit {
				return fmt.Errorf("-servers: %s needs -tollgate", r)
			}
		}
		rows = kept
	}
	if !slices.Contains(rows, floorName) {
		rows = append([]string{floorName}, rows...)
	}
	o.Servers = rows
	return nil
}

// sessionRows reports whether any session row runs.
func (o *options) sessionRows() bool { return slices.ContainsFunc(o.Servers, isSessionRow) }

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 10_000 {
			return nil, fmt.Errorf("%q: want an integer in [1, 10000]", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// validate reports every bad flag at once.
func (o *options) validate() error {
	var errs []error
	bad := func(flag string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("-%s: "+format, append([]any{flag}, a...)...))
	}
	if o.Addr == "" && o.Null == "" {
		errs = append(errs, errors.New("nothing to measure: give -null (the floor) and -tollgate, or -addr"))
	}
	if o.Addr == "" && o.sessionRows() && (o.Sessions < 1 || o.Sessions > 100_000) {
		bad("sessions", "%d: want [1, 100000]", o.Sessions)
	}
	if o.Addr != "" {
		if o.Tollgate != "" || o.Null != "" {
			errs = append(errs, errors.New("-addr (ad-hoc) cannot be combined with -tollgate or -null"))
		}
		if err := loopback.CheckHostPort(o.Addr); err != nil {
			bad("addr", "%v", err)
		}
		if o.MetricsURL != "" {
			if err := loopback.CheckURL(o.MetricsURL); err != nil {
				bad("metrics-url", "%v", err)
			}
		}
	}
	if len(o.Concurrency) == 0 && o.Rate == 0 {
		errs = append(errs, errors.New("no phases: -concurrency is empty and -rate is 0"))
	}
	if o.Duration <= 0 || o.Duration > time.Hour {
		bad("duration", "%v: want (0, 1h]", o.Duration)
	}
	if o.Warmup < 0 || o.Warmup > 10*time.Minute {
		bad("warmup", "%v: want [0, 10m]", o.Warmup)
	}
	if o.Rounds < 1 || o.Rounds > 100 {
		bad("rounds", "%d: want [1, 100]", o.Rounds)
	} else if o.Duration/time.Duration(o.Rounds) < 100*time.Millisecond {
		bad("rounds", "%d slices of -duration %v are under 100ms each", o.Rounds, o.Duration)
	}
	if o.Conns < 1 || o.Conns > 64 {
		bad("conns", "%d: want [1, 64]", o.Conns)
	}
	if o.Rate < 0 || o.Rate > 1e6 {
		bad("rate", "%g: want [0, 1e6]", o.Rate)
	}
	if o.FixedWorkers < 1 || o.FixedWorkers > 10_000 {
		bad("fixed-workers", "%d: want [1, 10000]", o.FixedWorkers)
	}
	if o.Tokens < 1 || o.Tokens > 1_000_000 {
		bad("tokens", "%d: want [1, 1e6]", o.Tokens)
	}
	if o.CallTimeout < 0 {
		bad("call-timeout", "%v: want ≥ 0", o.CallTimeout)
	}
	if o.MaxChecks < 1 {
		bad("max-checks", "%d: want ≥ 1", o.MaxChecks)
	}
	if o.ReadyTimeout <= 0 || o.ReadyTimeout > 5*time.Minute {
		bad("ready-timeout", "%v: want (0, 5m]", o.ReadyTimeout)
	}
	if o.MemDuration < 0 || o.MemDuration > time.Hour {
		bad("memory-duration", "%v: want [0, 1h]", o.MemDuration)
	}
	if o.MemDuration > 0 {
		if o.MemRate <= 0 || o.MemRate > 1e6 {
			bad("memory-rate", "%g: want (0, 1e6]", o.MemRate)
		}
		if o.MemTokens < 1 || o.MemTokens > 1_000_000 {
			bad("memory-tokens", "%d: want [1, 1e6]", o.MemTokens)
		}
		if o.MemInterval <= 0 {
			bad("memory-interval", "%v: want > 0", o.MemInterval)
		}
	}
	return errors.Join(errs...)
}

// specs lists the measured phases in report order.
func (o *options) specs() []loadSpec {
	var out []loadSpec
	for _, c := range o.Concurrency {
		out = append(out, loadSpec{Mode: modeClosed, Concurrency: c, Duration: o.Duration, MaxChecks: o.MaxChecks, CallTimeout: o.CallTimeout})
	}
	if o.Rate > 0 {
		out = append(out, loadSpec{Mode: modeFixed, Concurrency: o.FixedWorkers, Rate: o.Rate, Duration: o.Duration, MaxChecks: o.MaxChecks, CallTimeout: o.CallTimeout})
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	if o.Addr != "" {
		return runAdhoc(ctx, o, hc, stdout, logger)
	}
	return runBench(ctx, o, hc, stdout, logger)
}

// runBench is the orchestrated benchmark; see the package comment.
func runBench(ctx context.Context, o *options, hc *http.Client, stdout io.Writer, logger *slog.Logger) (err error) {
	dir := o.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tollgate-bench-"); err != nil {
			return err
		}
		defer func() {
			if err == nil && !o.Keep {
				_ = os.RemoveAll(dir)
				return
			}
			logger.Info("server logs and config kept", "dir", dir)
		}()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	is, err := startIssuer(ctx)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = is.Close(cctx)
	}()
	tokens, err := is.mintN(ctx, o.Tokens)
	if err != nil {
		return err
	}
	src, err := newRequestSource(tokens)
	if err != nil {
		return err
	}

	// Every process is stopped in reverse start order on every return
	// path, including a failed start.
	var fl *fleet
	defer func() {
		if fl != nil {
			fl.stop(logger)
		}
	}()
	if fl, err = startFleet(ctx, o, hc, dir, is, src, logger); err != nil {
		return err
	}
	if len(o.Servers) < len(allRows) {
		logger.Info("server rows", "servers", strings.Join(o.Servers, ","))
	}

	rows, err := runMatrix(ctx, hc, fl.targets, o.specs(), o.Warmup, o.Rounds, logger)
	if err != nil {
		return err
	}
	if err := printTable(stdout, rows); err != nil {
		return err
	}

	var mem *memResult
	switch {
	case o.MemDuration == 0:
	case fl.memTarget == nil:
		logger.Info("memory phase skipped: it runs against a Tollgate row taking JWTs (tollgate or tollgate+policy)")
	default:
		if mem, err = memoryPhase(ctx, o, is, fl.memTarget, logger); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		if err := printMemory(stdout, mem); err != nil {
			return err
		}
	}

	if o.JSON != "" {
		if err := writeJSON(o.JSON, rows, mem); err != nil {
			return err
		}
	}
	return checkClean(rows, mem)
}

// memoryPhase mints the distinct tokens (before any load, so signing does
// not compete with the server) and runs the RSS-sampled fixed-rate phase.
func memoryPhase(ctx context.Context, o *options, is *issuer, t *target, logger *slog.Logger) (*memResult, error) {
	logger.Info("minting tokens for the memory phase", "n", o.MemTokens)
	tokens, err := is.mintN(ctx, o.MemTokens)
	if err != nil {
		return nil, err
	}
	src, err := newRequestSource(tokens)
	if err != nil {
		return nil, err
	}
	spec := loadSpec{Mode: modeFixed, Concurrency: o.FixedWorkers, Rate: o.MemRate, Duration: o.MemDuration, MaxChecks: o.MaxChecks, CallTimeout: o.CallTimeout}
	logger.Info("memory phase", "server", t.Name, "spec", spec.String(), "duration", o.MemDuration)
	return runMemory(ctx, t, src, o.MemTokens, spec, o.MemInterval)
}

// runMatrix runs every phase against every target, phase-major: all servers
// see one load shape back to back, each with its own traffic (t.Src). With
// rounds > 1 each phase is cut into that many slices, alternated across
// servers (A B C A B C) and summed, so drift in machine noise during the
// run lands on the compared rows roughly equally instead of on whichever
// server happened to run last. Only the first slice of each phase is
// preceded by a warm-up.
func runMatrix(ctx context.Context, hc *http.Client, targets []*target, specs []loadSpec, warmup time.Duration, rounds int, logger *slog.Logger) ([]runResult, error) {
	rounds = max(rounds, 1)
	var rows []runResult
	for _, spec := range specs {
		slice := spec
		slice.Duration = spec.Duration / time.Duration(rounds)
		slice.MaxChecks = ceilDiv(spec.MaxChecks, int64(rounds))
		acc := make([]runResult, len(targets))
		for round := range rounds {
			w := time.Duration(0)
			if round == 0 {
				w = warmup
			}
			for i, t := range targets {
				r, err := measure(ctx, hc, t, t.Src, slice, w)
				if err != nil {
					return rows, err
				}
				r.Spec = spec
				acc[i].add(r)
			}
		}
		for _, r := range acc {
			attrs := []any{"server", r.Server, "mode", spec.String(),
				"checks_per_s", int(r.Load.rate()), "p99", r.Load.Hist.quantile(0.99),
				"server_cpu_us_per_check", fmtFloat(r.ServerCPUPerCheck(), 1), "errors", r.Load.Errors}
			if spec.Mode == modeFixed {
				attrs = append(attrs, "send_lag_p99", r.Load.Lag.quantile(0.99))
			}
			if r.HaveRT {
				attrs = append(attrs, "redis_rt_per_check", fmtFloat(r.RedisRTPerCheck(), 3))
			}
			if r.HaveRedis {
				attrs = append(attrs, "redis_cmds_per_check", r.redisByCmd())
			}
			logger.Info("phase done", attrs...)
			if r.Load.FirstErr != nil {
				logger.Warn("example error", "server", r.Server, "err", r.Load.FirstErr)
			}
		}
		rows = append(rows, acc...)
	}
	return rows, nil
}

// runAdhoc measures an already running server: no processes are started or
// stopped, and the memory phase (which needs many tokens the server trusts)
// is not run.
func runAdhoc(ctx context.Context, o *options, hc *http.Client, stdout io.Writer, logger *slog.Logger) error {
	tokens := []string{o.Token}
	if o.Token == "" {
		is, err := startIssuer(ctx)
		if err != nil {
			return err
		}
		tokens, err = is.mintN(ctx, o.Tokens)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = is.Close(cctx)
		cancel()
		if err != nil {
			return err
		}
	}
	src, err := newRequestSource(tokens)
	if err != nil {
		return err
	}
	t := &target{Name: o.Name, Addr: o.Addr, MetricsURL: o.MetricsURL, PID: o.PID, Src: src}
	if err := t.dial(ctx, o.Conns); err != nil {
		return err
	}
	defer t.close()
	rows, err := runMatrix(ctx, hc, []*target{t}, o.specs(), o.Warmup, o.Rounds, logger)
	if err != nil {
		return err
	}
	if err := printTable(stdout, rows); err != nil {
		return err
	}
	if o.JSON != "" {
		if err := writeJSON(o.JSON, rows, nil); err != nil {
			return err
		}
	}
	return checkClean(rows, nil)
}

// checkClean fails the run if any Check errored or was denied: every token
// is valid, so either means the numbers describe something other than the
// intended path.
func checkClean(rows []runResult, mem *memResult) error {
	var errs []error
	for _, r := range rows {
		if r.Load.Errors > 0 || r.Load.NonOK > 0 {
			errs = append(errs, fmt.Errorf("%s %v: %d errors, %d non-OK (first error: %v)", r.Server, r.Spec, r.Load.Errors, r.Load.NonOK, r.Load.FirstErr))
		}
	}
	if mem != nil && mem.Load != nil && (mem.Load.Errors > 0 || mem.Load.NonOK > 0) {
		errs = append(errs, fmt.Errorf("memory phase: %d errors, %d non-OK (first error: %v)", mem.Load.Errors, mem.Load.NonOK, mem.Load.FirstErr))
	}
	return errors.Join(errs...)
}
