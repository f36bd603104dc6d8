package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/session"
)

// Server rows, in report order. Each is one process measured under the same
// phases; null-proto is the floor every row's CPU is compared with.
const (
	rowNullProto = floorName
	rowNullVT    = "null-vt"
	rowTollgate  = "tollgate"
	rowPolicy    = "tollgate+policy"
	// rowPolicyEval is the policy row with the decision cache off: what
	// evaluating the policy on every Check costs.
	rowPolicyEval   = "tollgate+policy-nocache"
	rowSession      = "tollgate+session"
	rowSessionCache = "tollgate+session+cache"
)

// allRows is every row, in report order; the default of -servers.
var allRows = []string{rowNullProto, rowNullVT, rowTollgate, rowPolicy, rowPolicyEval, rowSession, rowSessionCache}

func isNullRow(name string) bool    { return name == rowNullProto || name == rowNullVT }
func isSessionRow(name string) bool { return name == rowSession || name == rowSessionCache }

// parseServers parses the -servers list and returns it in report order.
func parseServers(s string) ([]string, error) {
	var errs []error
	seen := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case !slices.Contains(allRows, f):
			errs = append(errs, fmt.Errorf("unknown server %q (known: %s)", f, strings.Join(allRows, ",")))
		case seen[f]:
			errs = append(errs, fmt.Errorf("server %q listed twice", f))
		default:
			seen[f] = true
		}
	}
	var out []string
	for _, r := range allRows {
		if seen[r] {
			out = append(out, r)
		}
	}
	if len(errs) == 0 && len(out) == 0 {
		errs = append(errs, errors.New("empty: name at least one server"))
	}
	return out, errors.Join(errs...)
}

// fleet is every process the orchestrated run started, and the targets
// that measure them.
type fleet struct {
	servers []*server // measured rows, in report order
	redis   *redisServer
	procs   []*proc // every process started, in start order
	targets []*target
	// memTarget is the Tollgate row the memory phase runs against: the
	// first row that takes JWT traffic (tollgate, else tollgate+policy).
	memTarget *target
}

// stop closes the connections, then stops every process in reverse start
// order. Safe on a partially started fleet.
func (f *fleet) stop(logger *slog.Logger) {
	for _, t := range f.targets {
		t.close()
	}
	for i := len(f.procs) - 1; i >= 0; i-- {
		if err := f.procs[i].stop(); err != nil {
			logger.Warn("stop process", "process", f.procs[i].Name, "err", err)
		}
	}
}

// startFleet starts the servers of o.Servers (and Redis when a session row
// needs it), creates the sessions, and dials every server. On error the
// caller still calls f.stop.
func startFleet(ctx context.Context, o *options, hc *http.Client, dir string, is *issuer, jwtSrc *requestSource, logger *slog.Logger) (*fleet, error) {
	f := &fleet{}
	var adminToken, adminTokenFile string
	var redisProbeFor *redisProbe
	for _, name := range o.Servers {
		logPath := filepath.Join(dir, name+".log")
		if isNullRow(name) {
			s, err := startNull(ctx, hc, o.Null, strings.TrimPrefix(name, "null-"), logPath, o.ReadyTimeout)
			switch {
			case errors.Is(err, errNoVT):
				logger.Warn("skipping null-vt: build nullauthz with -tags vtprotobuf to measure internal/vtcodec")
				continue
			case err != nil:
				return f, err
			}
			f.procs = append(f.procs, s.proc)
			f.servers = append(f.servers, s)
			continue
		}

		setup := tollgateSetup{IssuerURL: is.URL, JWKSURL: is.JWKSURL}
		var err error
		if setup.GRPCAddr, err = freeLoopbackAddr(ctx); err != nil {
			return f, err
		}
		if setup.HTTPAddr, err = freeLoopbackAddr(ctx); err != nil {
			return f, err
		}
		if name == rowPolicy || name == rowPolicyEval {
			setup.PolicyDir = filepath.Join(dir, "policy")
			setup.NoDecisionCache = name == rowPolicyEval
			if err := writePolicy(setup.PolicyDir); err != nil {
				return f, err
			}
		}
		if isSessionRow(name) {
			if f.redis == nil {
				rlog := filepath.Join(dir, "redis.log")
				if f.redis, err = startRedis(ctx, o.RedisServer, dir, rlog, o.ReadyTimeout); err != nil {
					return f, err
				}
				f.procs = append(f.procs, f.redis.proc)
				redisProbeFor = &redisProbe{Addr: f.redis.Addr, PID: f.redis.PID}
				logger.Info("redis ready", "pid", f.redis.PID, "addr", f.redis.Addr, "log", rlog)
				adminTokenFile = filepath.Join(dir, "admin-token")
				if adminToken, err = writeAdminToken(adminTokenFile); err != nil {
					return f, err
				}
			}
			ss := &sessionSetup{
				AdminTokenFile: adminTokenFile,
				KeysDir:        filepath.Join(dir, "keys-"+name),
				RedisAddr:      f.redis.Addr,
				LocalCache:     name == rowSessionCache,
			}
			if ss.AdminAddr, err = freeLoopbackAddr(ctx); err != nil {
				return f, err
			}
			setup.Sessions = ss
		}
		cfgPath := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(cfgPath, tollgateConfig(setup), 0o644); err != nil {
			return f, err
		}
		s, err := startTollgate(ctx, hc, name, o.Tollgate, cfgPath, setup.GRPCAddr, setup.HTTPAddr, logPath, o.ReadyTimeout)
		if err != nil {
			return f, err
		}
		if setup.Sessions != nil {
			s.AdminAddr = setup.Sessions.AdminAddr
		}
		f.procs = append(f.procs, s.proc)
		f.servers = append(f.servers, s)
	}

	// The session rows share one Redis, so one set of sessions, created
	// through the first session row's admin API, serves both.
	var sessSrc *requestSource
	for _, s := range f.servers {
		if s.AdminAddr == "" {
			continue
		}
		start := time.Now()
		ids, err := createSessions(ctx, hc, "http://"+s.AdminAddr, adminToken, o.Sessions)
		if err != nil {
			return f, fmt.Errorf("%s: creating sessions: %w", s.Name, err)
		}
		logger.Info("sessions created through the admin API", "server", s.Name, "n", len(ids), "took", time.Since(start).Round(time.Millisecond))
		if sessSrc, err = newSessionSource(sessionCookie, ids); err != nil {
			return f, err
		}
		break
	}

	for _, s := range f.servers {
		t := s.target()
		t.Src = jwtSrc
		if isSessionRow(s.Name) {
			t.Src, t.Redis = sessSrc, redisProbeFor
		}
		if err := t.dial(ctx, o.Conns); err != nil {
			return f, err
		}
		f.targets = append(f.targets, t)
		if f.memTarget == nil && (s.Name == rowTollgate || s.Name == rowPolicy) {
			f.memTarget = t
		}
		logger.Info("server ready", "server", s.Name, "pid", s.PID, "grpc", s.GRPCAddr, "http", s.HTTPAddr, "log", s.LogPath)
	}
	return f, nil
}

// writeAdminToken writes a fresh random admin token to path (0600) and
// returns it.
func writeAdminToken(path string) (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// createSessions creates n sessions through the admin API, for user-0 …
// user-(n-1) with the same roles their JWTs carry, and returns their IDs.
// A few workers share the work; each request is bounded by hc's timeout.
func createSessions(ctx context.Context, hc *http.Client, baseURL, token string, n int) ([]string, error) {
	c := &session.AdminClient{BaseURL: baseURL, Token: token, HTTPClient: hc}
	ids := make([]string, n)
	workers := min(4, n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				resp, err := c.Create(ctx, session.AdminCreateRequest{
					Subject: "user-" + strconv.Itoa(i),
					Claims:  map[string]any{"roles": benchRoles(i)},
				})
				if err != nil {
					errs[w] = fmt.Errorf("session for user-%d: %w", i, err)
					return
				}
				ids[i] = resp.SessionID
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ids, nil
}
