// Package app assembles Tollgate's components from a validated config and
// runs them with an explicit lifecycle: New builds and validates without
// touching the network, Start binds every listener before it spawns a
// goroutine (so a bind error is returned, not logged), and Stop drains
// in-flight Checks within its context's deadline. Stop is safe after a
// failed or partial Start.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/devissuer"
	"github.com/tollgate-dev/tollgate/internal/devmode"
	"github.com/tollgate-dev/tollgate/internal/vtcodec"
	"github.com/tollgate-dev/tollgate/jwks"
	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// App is a running (or runnable) Tollgate.
type App struct {
	cfg *config.Config
	log *slog.Logger
	reg *prometheus.Registry

	dev      *devissuer.Issuer
	verifier *jwks.Verifier
	checker  *authz.Checker

	policy       *policy.Engine
	keyring      *keyring.Keyring
	sessions     session.Store
	adminHandler http.Handler

	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	admin  *http.Server

	reloads *prometheus.CounterVec

	started []func(context.Context) error // Stop funcs of started parts
	closers []func()

	grpcLn, httpLn, adminLn net.Listener
	startedAt               time.Time
	wg                      sync.WaitGroup
	stopOnce                sync.Once
	verifierOn              bool
	startupOver             chan struct{}
}

// New builds every component from cfg. It opens no listener and makes no
// network call.
func New(cfg *config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, reg: prometheus.NewRegistry(), startupOver: make(chan struct{})}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reloads = newReloadMetric(a.reg)

	issuers := cfg.Issuers
	if cfg.Dev.Enabled {
		dev, err := devissuer.LoadOrCreate(cfg.Dev.Issuer, cfg.Dev.KeyFile)
		if err != nil {
			return nil, err
		}
		if d := cfg.Dev.ExamplePolicyDir; d != "" {
			created, err := devmode.EnsurePolicy(d)
			if err != nil {
				return nil, err
			}
			if created {
				log.Info("dev mode: example policy written; edit it and Tollgate reloads it", "dir", d)
			}
		}
		if f := cfg.Dev.AdminTokenFile; f != "" {
			if err := devmode.EnsureToken(f); err != nil {
				return nil, err
			}
		}
		a.dev = dev
		issuers = append(append([]config.Issuer(nil), issuers...), cfg.DevIssuer())
	}
	if len(issuers) > 0 {
		jc := jwks.Config{
			MaxTokenBytes:   cfg.Tokens.MaxBytes,
			CacheMaxEntries: cfg.Tokens.CacheMaxEntries,
			CacheMaxBytes:   cfg.Tokens.CacheMaxBytes,
		}
		for _, is := range issuers {
			jc.Issuers = append(jc.Issuers, jwks.IssuerConfig{
				Issuer:                    is.Issuer,
				JWKSURI:                   is.JWKSURI,
				Discovery:                 is.Discovery,
				Algorithms:                is.Algorithms,
				Leeway:                    is.Leeway.D(),
				InsecureHTTP:              is.InsecureHTTP,
				HMACSecret:                []byte(is.HMACSecret.Reveal()),
				MinRefresh:                is.RefreshMin.D(),
				MaxRefresh:                is.RefreshMax.D(),
				UnknownKeyRefreshInterval: is.UnknownKeyRefreshInterval.D(),
				FetchTimeout:              is.FetchTimeout.D(),
			})
		}
		v, err := jwks.New(jc, jwks.WithLogger(log), jwks.WithRegisterer(a.reg))
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		a.verifier = v
	}

	ac := authz.Config{MaxTokenBytes: cfg.Tokens.MaxBytes, RemoveHeaders: cfg.Headers.Remove}
	for _, ch := range cfg.Headers.ClaimHeaders() {
		ac.ClaimHeaders = append(ac.ClaimHeaders, authz.ClaimHeader{Claim: ch.Claim, Header: ch.Header})
	}
	for _, s := range cfg.Services {
		mode, err := authz.ParseAuthMode(s.Auth)
		if err != nil {
			return nil, err
		}
		ac.Services = append(ac.Services, authz.Service{
			Name: s.Name, Hosts: s.Hosts, PathPrefixes: s.PathPrefixes,
			Audiences: s.Audiences, Auth: mode,
		})
	}
	for i, s := range cfg.Services {
		ac.Services[i].InternalAudience = s.InternalAudience
	}
	var tv authz.TokenVerifier
	if a.verifier != nil {
		tv = a.verifier
	}
	parts, err := a.pipelineParts(cfg, log, a.reg)
	if err != nil {
		_ = a.stopParts(context.Background())
		return nil, err
	}
	checker, err := authz.New(ac, tv, append(parts, authz.WithLogger(log), authz.WithRegisterer(a.reg))...)
	if err != nil {
		_ = a.stopParts(context.Background())
		return nil, err
	}
	a.checker = checker

	gopts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(vtcodec.Codec()),
		// Envoy keeps long-lived connections; answer its pings and
		// allow frequent ones rather than GOAWAY it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4 << 20),
		// Reuse a fixed set of goroutines for streams instead of one new
		// goroutine (and stack growth) per Check.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
	if n := cfg.Server.MaxConcurrentStreams; n > 0 {
		gopts = append(gopts, grpc.MaxConcurrentStreams(n))
	}
	a.grpc = grpc.NewServer(gopts...)
	authv3.RegisterAuthorizationServer(a.grpc, authz.NewGRPCServer(checker))
	a.health = health.NewServer()
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	a.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(a.grpc, a.health)
	if cfg.Server.Reflection {
		reflection.Register(a.grpc)
	}
	a.http = &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if a.adminHandler != nil {
		a.admin = &http.Server{
			Handler:           a.adminHandler,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
	}
	return a, nil
}

// Checker returns the Check pipeline (for in-process use and benchmarks).
func (a *App) Checker() *authz.Checker { return a.checker }

// GRPCAddr is the bound gRPC address (after Start).
func (a *App) GRPCAddr() string { return addr(a.grpcLn) }

// AdminAddr is the bound admin API address (after Start; "" when off).
func (a *App) AdminAddr() string { return addr(a.adminLn) }

// HTTPAddr is the bound HTTP address (after Start).
func (a *App) HTTPAddr() string { return addr(a.httpLn) }

func addr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Start binds both listeners, then serves and starts the key refreshers.
func (a *App) Start(ctx context.Context) error {
	var lc net.ListenConfig
	var err error
	if a.httpLn, err = lc.Listen(ctx, "tcp", a.cfg.Server.HTTPAddress); err != nil {
		return fmt.Errorf("listen server.http_address %s: %w", a.cfg.Server.HTTPAddress, err)
	}
	if a.grpcLn, err = lc.Listen(ctx, "tcp", a.cfg.Server.GRPCAddress); err != nil {
		return fmt.Errorf("listen server.grpc_address %s: %w", a.cfg.Server.GRPCAddress, err)
	}
	if a.admin != nil {
		if a.adminLn, err = lc.Listen(ctx, "tcp", a.cfg.Server.AdminAddress); err != nil {
			return fmt.Errorf("listen server.admin_address %s: %w", a.cfg.Server.AdminAddress, err)
		}
	}
	if err := a.startParts(ctx); err != nil {
		return err
	}
	a.startedAt = time.Now()
	if a.admin != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.admin.Serve(a.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("admin server stopped", "error", err)
			}
		}()
	}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "error", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		if err := a.grpc.Serve(a.grpcLn); err != nil {
			a.log.Error("grpc server stopped", "error", err)
		}
	}()
	if a.verifier != nil {
		if err := a.verifier.Start(ctx); err != nil {
			return fmt.Errorf("start key refreshers: %w", err)
		}
		a.verifierOn = true
	}
	a.wg.Add(1)
	go a.watchReadiness()
	a.log.Info("tollgate listening", "grpc", a.GRPCAddr(), "http", a.HTTPAddr(), "admin", addr(a.adminLn), "dev_mode", a.dev != nil)
	return nil
}

// watchReadiness flips gRPC health to SERVING once every issuer's keys have
// loaded, or when the start-up timeout passes (then the missing issuers are
// named in the log and on /readyz, and their tokens are refused as
// jwks_unavailable until their keys arrive).
func (a *App) watchReadiness() {
	defer a.wg.Done()
	deadline := time.NewTimer(a.cfg.Server.StartupTimeout.D())
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(a.missing()) == 0 {
			a.setServing("all issuer keys loaded")
			return
		}
		select {
		case <-a.startupOver:
			return
		case <-deadline.C:
			a.log.Warn("start-up timeout: serving without some issuers' keys", "missing_issuers", a.missing())
			a.setServing("start-up timeout")
			return
		case <-tick.C:
		}
	}
}

func (a *App) setServing(why string) {
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	a.stopOnce.Do(func() { close(a.startupOver) })
	a.log.Info("ready", "why", why, "after", time.Since(a.startedAt).Round(time.Millisecond))
}

func (a *App) ready() bool {
	select {
	case <-a.startupOver:
		return true
	default:
		return false
	}
}

func (a *App) missing() []string {
	if a.verifier == nil {
		return nil
	}
	return a.verifier.Missing()
}

// Stop reports NOT_SERVING, stops accepting, drains in-flight Checks until
// ctx ends (then cuts them), and stops the refreshers.
func (a *App) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() { close(a.startupOver) })
	a.health.Shutdown() // NOT_SERVING for every service
	drained := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(drained)
	}()
	var errs []error
	select {
	case <-drained:
	case <-ctx.Done():
		a.grpc.Stop()
		<-drained
		errs = append(errs, fmt.Errorf("grpc drain: %w", ctx.Err()))
	}
	if err := a.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if a.admin != nil {
		if err := a.admin.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
		}
	}
	for _, l := range []net.Listener{a.grpcLn, a.httpLn, a.adminLn} {
		if l != nil {
			_ = l.Close() // a listener bound by a Start that failed half-way
		}
	}
	if err := a.stopParts(ctx); err != nil {
		errs = append(errs, err)
	}
	if a.verifierOn {
		if err := a.verifier.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop key refreshers: %w", err))
		}
	}
	a.wg.Wait()
	return errors.Join(errs...)
}

// Run starts the app, runs Reload for every value on hup, waits for ctx to
// end, and stops within the configured shutdown timeout.
func (a *App) Run(ctx context.Context, hup <-chan struct{}) error {
	if err := a.Start(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.D())
		defer cancel()
		return errors.Join(err, a.Stop(sctx))
	}
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			_ = a.Reload(ctx) // logged and counted per part
		}
	}
	a.log.Info("shutting down", "drain_timeout", a.cfg.Server.ShutdownTimeout.D())
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.D())
	defer cancel()
	return a.Stop(sctx)
}

// NewLogger builds the process logger from the log section.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// TuneGC applies server.gc_percent and server.memory_limit_mib unless the
// GOGC or GOMEMLIMIT environment variables already decided them. It
// returns what is in force, for the start-up log.
func TuneGC(s config.Server, getenv func(string) string) (gcPercent int, memLimit int64) {
	gcPercent = -1
	if getenv("GOGC") == "" {
		debug.SetGCPercent(s.GCPercent)
		gcPercent = s.GCPercent
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(s.MemoryLimitMiB) << 20)
	}
	return gcPercent, debug.SetMemoryLimit(-1)
}
