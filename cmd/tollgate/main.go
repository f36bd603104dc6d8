// Command tollgate is an external-authorization service for Envoy and Istio.
//
//	tollgate serve [--config FILE]   run the server (no file: development mode)
//	tollgate check --config FILE     validate a config and exit
//	tollgate dev-token --sub S --aud A   print a token the development mode accepts
//	tollgate client [flags]          send one Check to a running server
//	tollgate policy test|eval        test and debug Rego policies
//	tollgate session …               manage sessions via the admin API
//	tollgate keys list|rotate|revoke manage Tollgate's signing keys
//	tollgate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: tollgate <command> [flags]

commands:
  serve      run the ext_authz server (--config FILE; without it: development mode)
  check      validate a config file (--config FILE)
  dev-token  print a token the development mode accepts
  client     send one Check request to a running server
  policy     test and evaluate Rego policies (policy test DIR…, policy eval)
  session    manage sessions through the admin API (create, revoke, revoke-subject, list)
  keys       list, rotate or revoke Tollgate's signing keys
  version    print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serve(rest, stderr)
	case "check":
		err = check(rest, stdout)
	case "dev-token":
		err = devToken(rest, stdout)
	case "client":
		return client(rest, stdout, stderr)
	case "policy":
		return policyCmd(rest, stdout, stderr)
	case "session":
		return sessionCmd(rest, stdout, stderr)
	case "keys":
		return keysCmd(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "tollgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tollgate: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tollgate:", err)
		return 1
	}
	return 0
}

// loadConfig reads --config, or returns the embedded development config.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Development(), nil
	}
	return config.Load(path)
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "", "config file (default: embedded development config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg.Log, stderr)
	if cfg.Dev.Enabled {
		log.Warn("development mode: trusting the local dev issuer; never use in production",
			"issuer", cfg.Dev.Issuer, "key_file", cfg.Dev.KeyFile)
	}
	gc, limit := app.TuneGC(cfg.Server, os.Getenv)
	log.Info("memory", "gc_percent", gc, "memory_limit_mib", limit>>20)
	redis.SetLogger(app.RedisLogger(log))
	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)
	hup := make(chan struct{})
	go func() {
		for {
			select {
			case <-sig:
				select {
				case hup <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return a.Run(ctx, hup)
}

func check(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	path := fs.String("config", "", "config file to validate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("check: --config is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	// Validate every component as serve would build it (policies are
	// compiled), without opening stores or listeners.
	rep, err := app.Check(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d issuers, %d services)\n", *path, len(cfg.Issuers), len(cfg.Services))
	// Whether decisions can be cached is a property of the policy that
	// its authors want to know before it serves.
	for _, q := range rep.Queries {
		if q.Cached {
			fmt.Fprintf(stdout, "policy %s: decisions cached, keyed by %s\n", q.Query, strings.Join(q.KeyedBy, ", "))
		} else {
			fmt.Fprintf(stdout, "policy %s: decisions not cached: %s\n", q.Query, q.Uncached)
		}
	}
	return nil
}
