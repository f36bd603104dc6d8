// Command nullauthz is a do-nothing Envoy ext_authz server: every Check is
// answered OK with an empty OkHttpResponse. It is the measurement floor for
// test/load: what it costs per Check is the price of gRPC, HTTP/2 and
// protobuf on this machine, and Tollgate's own cost is what it adds on top.
//
// It prints one line "grpc=ADDR http=ADDR" on stdout once both listeners are
// bound, so a parent process can start it on port 0 and read the real
// addresses. Logs go to stderr. It listens on loopback addresses only.
//
// -codec vt uses internal/vtcodec and requires a binary built with
// -tags vtprotobuf; without the tag it exits with status 2 rather than
// silently measuring the protobuf-go path twice.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/internal/vtcodec"
	"github.com/tollgate-dev/tollgate/test/load/internal/loopback"
)

// exitNoVT is the exit status for "-codec vt in a binary without VT
// methods"; the orchestrator treats it as "skip this row", not a failure.
const exitNoVT = 2

// shutdownGrace bounds graceful shutdown; after it in-flight RPCs are cut.
const shutdownGrace = 5 * time.Second

var errNoVT = errors.New("-codec vt needs a binary built with -tags vtprotobuf (go-control-plane compiles its VT marshalers only under that tag)")

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, logger)
	stop()
	switch {
	case errors.Is(err, errNoVT):
		logger.Error("nullauthz", "err", err)
		os.Exit(exitNoVT)
	case err != nil:
		logger.Error("nullauthz", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. It returns bind and flag errors before
// printing the address line, so a parent never reads addresses that are not
// served.
func run(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("nullauthz", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:0", "gRPC listen address (loopback only; port 0 picks a free port)")
	httpAddr := fs.String("http-addr", "127.0.0.1:0", "HTTP listen address for /metrics and /readyz (loopback only)")
	codecName := fs.String("codec", "proto", "server codec: proto (grpc default) or vt (internal/vtcodec)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, a := range []string{*grpcAddr, *httpAddr} {
		if err := loopback.CheckHostPort(a); err != nil {
			return err
		}
	}

	var opts []grpc.ServerOption
	switch *codecName {
	case "proto":
		// grpc's registered default codec: the baseline.
	case "vt":
		if !vtcodec.HasVT(&authv3.CheckResponse{}) {
			return errNoVT
		}
		opts = append(opts, grpc.ForceServerCodecV2(vtcodec.Codec()))
	default:
		return fmt.Errorf("-codec %q: want proto or vt", *codecName)
	}

	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register collector: %w", err)
		}
	}

	// Bind both listeners before serving anything so bind errors are
	// returned, not logged from a goroutine.
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", *grpcAddr)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	defer gl.Close()
	hl, err := lc.Listen(ctx, "tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	defer hl.Close()

	gs := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(gs, newServer())

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok\n")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() {
		if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()

	if _, err := fmt.Fprintf(stdout, "grpc=%s http=%s\n", gl.Addr(), hl.Addr()); err != nil {
		gs.Stop()
		_ = hs.Close()
		return fmt.Errorf("announce addresses: %w", err)
	}
	logger.Info("serving", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "codec", *codecName)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutdown(gs, hs)
	return serveErr
}

// shutdown stops both servers within shutdownGrace.
func shutdown(gs *grpc.Server, hs *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		gs.Stop()
	}
	_ = hs.Shutdown(ctx)
}

// server answers every Check with the same immutable OK response. Sharing
// it is deliberate: the floor should contain only what gRPC and the codec
// cost, and building a response per call is part of the cost being measured
// in Tollgate. Marshaling a shared message concurrently is safe (both codecs
// only read it; protobuf-go's size cache is written atomically).
type server struct {
	authv3.UnimplementedAuthorizationServer
	ok *authv3.CheckResponse
}

var _ authv3.AuthorizationServer = (*server)(nil)

func newServer() *server {
	return &server{ok: &authv3.CheckResponse{
		Status:       &status.Status{Code: 0},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}}
}

// Check implements authv3.AuthorizationServer.
func (s *server) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.ok, nil
}
