package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/policy"
)

const policyUsage = `usage: tollgate policy <command> [flags]

commands:
  test [-v] [--run REGEX] [--rego-version v0|v1] PATH...
        run the Rego unit tests (test_* rules in *_test.rego) found in PATH...
  eval (--config FILE | --policy PATH...) --input FILE [--identity FILE] [--service NAME]
        evaluate one decision for a CheckRequest (protojson, as Envoy sends it)
        and print the decision object
`

// policyCmd runs `tollgate policy …` and returns the exit code: 0 on
// success, 1 when a test failed or the policy could not be loaded or
// evaluated, 2 on a usage error.
func policyCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return policyTest(args[1:], stdout, stderr)
	case "eval":
		return policyEval(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "tollgate policy: unknown command %q\n%s", args[0], policyUsage)
	return 2
}

func policyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts policy.TestOptions
	fs.BoolVar(&opts.Verbose, "v", false, "list every test and its print() output")
	fs.BoolVar(&opts.Verbose, "verbose", false, "same as -v")
	fs.StringVar(&opts.Run, "run", "", "run only tests whose name matches this regular expression")
	fs.StringVar(&opts.RegoVersion, "rego-version", "v1", "v1, or v0 for policies written before OPA 1.0")
	fs.DurationVar(&opts.Timeout, "timeout", 5*time.Second, "timeout of each test")
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		return usageErr(err)
	}
	if len(paths) == 0 {
		fmt.Fprint(stderr, "tollgate policy test: at least one PATH is required\n")
		return 2
	}
	ok, err := policy.Test(context.Background(), stdout, paths, opts)
	if err != nil {
		fmt.Fprintln(stderr, "tollgate policy test:", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func policyEval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var policies stringList
	configPath := fs.String("config", "", "Tollgate config file whose policy section to use")
	fs.Var(&policies, "policy", "policy file or directory (repeatable; instead of --config)")
	inputPath := fs.String("input", "", "CheckRequest as JSON (protojson), as Envoy sends it")
	identityPath := fs.String("identity", "", `identity as JSON: {"type":"jwt","issuer":…,"subject":…,"claims":{…},"audiences":[…]} (default anonymous)`)
	serviceName := fs.String("service", "", "service the request is routed to (selects its policy_query)")
	query := fs.String("query", "", "decision to evaluate (default: the config's, or "+policy.DefaultQuery+")")
	regoVersion := fs.String("rego-version", "", "v1 (default) or v0 (with --policy)")
	expose := fs.Bool("expose-credentials", false, "keep credential headers in input.attributes (with --policy)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return usageErr(err)
	}
	if (*configPath == "") == (len(policies) == 0) {
		fmt.Fprint(stderr, "tollgate policy eval: exactly one of --config or --policy is required\n")
		return 2
	}
	if *inputPath == "" {
		fmt.Fprint(stderr, "tollgate policy eval: --input is required\n")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := evalOnce(log, evalArgs{
		config: *configPath, policies: policies, input: *inputPath, identity: *identityPath,
		service: *serviceName, query: *query, regoVersion: *regoVersion, expose: *expose,
	})
	if err != nil {
		fmt.Fprintln(stderr, "tollgate policy eval:", err)
		return 1
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		fmt.Fprintln(stderr, "tollgate policy eval:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return 0
}

type evalArgs struct {
	config, input, identity, service, query, regoVersion string
	policies                                             []string
	expose                                               bool
}

func evalOnce(log *slog.Logger, a evalArgs) (policy.Result, error) {
	var (
		cfg       policy.Config
		audiences []string
	)
	if a.config != "" {
		pc, err := readPolicyConfig(a.config)
		if err != nil {
			return policy.Result{}, err
		}
		cfg = pc.cfg
		audiences = pc.audiences[a.service]
	} else {
		cfg = policy.Config{Paths: a.policies, RegoVersion: a.regoVersion, ExposeCredentials: a.expose}
	}
	if a.query != "" {
		cfg.Query = a.query
		cfg.ServiceQueries = nil
	}
	cfg.DecisionLog = policy.DecisionLogConfig{}
	check, err := readCheckRequest(a.input)
	if err != nil {
		return policy.Result{}, err
	}
	id := policy.Identity{Type: policy.IdentityAnonymous}
	if a.identity != "" {
		if id, err = readIdentity(a.identity); err != nil {
			return policy.Result{}, err
		}
	}
	e, err := policy.New(cfg, policy.WithLogger(log))
	if err != nil {
		return policy.Result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() { _ = e.Stop(ctx) }()
	if cfg.Bundle != nil {
		// Wait for the first download.
		if err := e.Start(ctx); err != nil {
			return policy.Result{}, err
		}
		for !e.Status().Ready {
			if st := e.Status(); st.Bundle != nil && st.Bundle.LastError != "" {
				return policy.Result{}, errors.New(st.Bundle.LastError)
			}
			select {
			case <-ctx.Done():
				return policy.Result{}, fmt.Errorf("bundle not loaded: %w", ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return e.Eval(ctx, &policy.Input{
		Check:     check,
		Identity:  id,
		Service:   policy.Service{Name: a.service, Audiences: audiences},
		RequestID: check.GetAttributes().GetRequest().GetHttp().GetId(),
	})
}

func readCheckRequest(path string) (*authv3.CheckRequest, error) {
	bs, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(bs, &req); err != nil {
		return nil, fmt.Errorf("%s: not a CheckRequest in protojson: %w", path, err)
	}
	return &req, nil
}

func readIdentity(path string) (policy.Identity, error) {
	bs, err := os.ReadFile(path)
	if err != nil {
		return policy.Identity{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(bs))
	dec.UseNumber() // as verified claims are decoded
	dec.DisallowUnknownFields()
	var id policy.Identity
	if err := dec.Decode(&id); err != nil {
		return policy.Identity{}, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

type policyConfig struct {
	cfg       policy.Config
	audiences map[string][]string
}

// readPolicyConfig loads a Tollgate config file (strictly, as serve does)
// and maps its policy section and the services' policy_query.
func readPolicyConfig(path string) (policyConfig, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return policyConfig{}, err
	}
	if !cfg.Policy.Enabled() {
		return policyConfig{}, fmt.Errorf("%s: no policy.paths or policy.bundle", path)
	}
	pc, err := app.PolicyConfig(cfg)
	if err != nil {
		return policyConfig{}, err
	}
	out := policyConfig{cfg: pc, audiences: map[string][]string{}}
	for _, s := range cfg.Services {
		out.audiences[s.Name] = s.Audiences
	}
	return out, nil
}

// parseInterspersed parses flags that may follow positional arguments
// (`policy test dir -v`), returning the positional ones.
//
// Session IDs and kids are base64url and start with "-" about once in 64:
// a long argument that names no defined flag is positional, not an error.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest, flags []string
	for _, a := range args {
		if name := strings.TrimLeft(a, "-"); a != name && len(name) >= 20 && !strings.Contains(name, "=") && fs.Lookup(name) == nil {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
	}
	args = flags
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

func usageErr(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
