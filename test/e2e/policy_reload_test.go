package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// reloadWithin is how fast a changed policy file must be serving.
const reloadWithin = time.Second

// versionPolicy allows every request and tags it with x-policy-version.
func versionPolicy(v string) string {
	return fmt.Sprintf(`package tollgate.authz

allow := {"allowed": true, "headers": {"x-policy-version": %q}}
`, v)
}

// closedPolicy denies every request with a body of its own.
const closedPolicy = `package tollgate.authz

allow := {"allowed": false, "http_status": 403, "body": "closed by v2"}
`

// brokenPolicy has a syntax error on line 5.
const brokenPolicy = `package tollgate.authz

# v3: a syntax error on the next line.

allow := := true
`

// reloadSetup starts tollgate on a policy directory holding policy.rego
// with text, and returns it with the file and a bearer token it accepts.
func reloadSetup(t *testing.T, kid, text string) (tg *tollgate, file, token string) {
	t.Helper()
	key := newES256Key(t, kid)
	p := newIDP(t, 300, key)
	dir := polWriteDir(t, map[string]string{"policy.rego": text})
	tg = startTollgate(t, polConfig(p, "info", []polService{{name: "orders", host: ordersHost, auth: "required"}},
		polSection([]string{dir})))
	return tg, filepath.Join(dir, "policy.rego"), sign(t, key, validClaims(p.issuer()), nil)
}

// TestPolicyReload edits the policy of a running tollgate: a change is
// served within a second, a broken file leaves the previous policy serving
// and is reported with file:line, and fixing it recovers.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	tg, file, token := reloadSetup(t, "pol-reload", versionPolicy("v1"))
	var seq atomic.Int64
	decide := func(t *testing.T) (*authv3.CheckResponse, string) {
		t.Helper()
		id := fmt.Sprintf("pol-reload-%d", seq.Add(1))
		return tg.check(t, polReq{token: token}.build(t, id)), id
	}
	version := func(resp *authv3.CheckResponse) string {
		if v := polHeaderValues(resp.GetOkResponse().GetHeaders(), "x-policy-version"); len(v) == 1 {
			return v[0]
		}
		return ""
	}
	isClosed := func(resp *authv3.CheckResponse) bool {
		return resp.GetDeniedResponse().GetBody() == "closed by v2"
	}
	// served polls until pred holds for a fresh decision, and fails unless
	// it held within reloadWithin of since.
	served := func(t *testing.T, what string, since time.Time, pred func(*authv3.CheckResponse) bool) {
		t.Helper()
		var last *authv3.CheckResponse
		ok, _ := polEventually(3*reloadWithin, 20*time.Millisecond, func() bool {
			last, _ = decide(t)
			return pred(last)
		})
		took := time.Since(since)
		switch {
		case !ok:
			t.Fatalf("after writing %s, decision within %v = %s; want the new policy's", what, 3*reloadWithin, polDescribe(last))
		case took > reloadWithin:
			t.Errorf("after writing %s, the new decision was served after %v; want within %v", what, took.Round(time.Millisecond), reloadWithin)
		default:
			t.Logf("%s served %v after the write", what, took.Round(time.Millisecond))
		}
	}
	reloads := func(t *testing.T, result string) float64 {
		t.Helper()
		return polMetric(t, tg, "tollgate_policy_reloads_total", map[string]string{"result": result})
	}
	status := func(t *testing.T) *polStatus {
		t.Helper()
		code, ready, st := polReadyz(t, tg)
		if code != http.StatusOK || !ready || st == nil {
			t.Fatalf("GET /readyz = %d ready=%v policy=%+v; want 200, ready, with a policy status", code, ready, st)
		}
		return st
	}

	// Subtests run in order: each step starts from the previous one.
	t.Run("initial policy → allowed with its header; one successful load", func(t *testing.T) {
		resp, id := decide(t)
		polAssert(t, resp, id, polAllow(map[string]string{"x-policy-version": "v1", "x-user-id": "alice"}))
		if st := status(t); !st.Ready || st.Generation != 1 || st.LastError != "" {
			t.Errorf("/readyz policy = %+v; want Ready, Generation 1, no LastError", st)
		}
		if s, f := reloads(t, "success"), reloads(t, "failure"); s != 1 || f != 0 {
			t.Errorf("tollgate_policy_reloads_total success, failure = %v, %v; want 1, 0", s, f)
		}
	})

	t.Run("file rewritten in place → the new decision within 1s", func(t *testing.T) {
		if err := os.WriteFile(file, []byte(closedPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		served(t, "the closed policy", time.Now(), isClosed)
		resp, id := decide(t)
		polAssert(t, resp, id, polOutcome{code: codes.PermissionDenied, reason: "policy_denied", http: 403, body: "closed by v2"})
		if s := reloads(t, "success"); s != 2 {
			t.Errorf(`tollgate_policy_reloads_total{result="success"} = %v; want 2`, s)
		}
	})

	t.Run("syntax error → previous decisions continue; /readyz, log and metric report file:line", func(t *testing.T) {
		before := status(t)
		failures := reloads(t, "failure")
		polReplaceFile(t, file, brokenPolicy)
		var st *polStatus
		ok, took := polEventually(3*reloadWithin, 20*time.Millisecond, func() bool {
			st = status(t)
			return st.LastError != ""
		})
		if !ok {
			t.Fatalf("/readyz policy after writing a broken file = %+v; want a LastError within %v", st, 3*reloadWithin)
		}
		t.Logf("failure reported after %v: %s", took.Round(time.Millisecond), st.LastError)
		if !strings.Contains(st.LastError, "policy.rego:5:") || !strings.Contains(st.LastError, "rego_parse_error") {
			t.Errorf("/readyz policy LastError = %q; want it to name policy.rego:5: and rego_parse_error", st.LastError)
		}
		if !st.Ready || st.Generation != before.Generation || !st.LoadedAt.Equal(before.LoadedAt) {
			t.Errorf("/readyz policy = %+v; want still Ready on generation %d loaded at %v", st, before.Generation, before.LoadedAt)
		}
		if f := reloads(t, "failure"); f != failures+1 {
			t.Errorf(`tollgate_policy_reloads_total{result="failure"} = %v; want %v`, f, failures+1)
		}
		for range 5 {
			if resp, id := decide(t); !isClosed(resp) {
				t.Errorf("Check(%s) with a broken file on disk = %s; want the previous policy's denial", id, polDescribe(resp))
			}
		}
		ok, _ = polEventually(2*time.Second, 20*time.Millisecond, func() bool {
			for line := range strings.Lines(tg.stderr.String()) {
				if strings.Contains(line, "policy reload failed") && strings.Contains(line, "policy.rego:5:") {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Errorf("tollgate logs have no %q line naming policy.rego:5:; logs:\n%s", "policy reload failed", tg.stderr.String())
		}
	})

	t.Run("fixed in place → recovers within 1s; error cleared", func(t *testing.T) {
		before := status(t)
		successes := reloads(t, "success")
		if err := os.WriteFile(file, []byte(versionPolicy("v4")), 0o644); err != nil {
			t.Fatal(err)
		}
		served(t, "the fixed policy", time.Now(), func(r *authv3.CheckResponse) bool { return version(r) == "v4" })
		if st := status(t); !st.Ready || st.LastError != "" || st.Generation != before.Generation+1 {
			t.Errorf("/readyz policy = %+v; want Ready, no LastError, Generation %d", st, before.Generation+1)
		}
		if s := reloads(t, "success"); s != successes+1 {
			t.Errorf(`tollgate_policy_reloads_total{result="success"} = %v; want %v`, s, successes+1)
		}
	})

	t.Run("SIGHUP → policy reloaded and counted", func(t *testing.T) {
		successes := reloads(t, "success")
		if err := tg.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
		hup := map[string]string{"part": "policy", "result": "success"}
		ok, _ := polEventually(3*time.Second, 20*time.Millisecond, func() bool {
			status, body := tg.get(t, "/metrics")
			return status == http.StatusOK && strings.Contains(body, "tollgate_sighup_reloads_total{") &&
				polMetric(t, tg, "tollgate_sighup_reloads_total", hup) == 1
		})
		if !ok {
			t.Fatalf("tollgate_sighup_reloads_total%v did not reach 1 within 3s", hup)
		}
		if s := reloads(t, "success"); s != successes+1 {
			t.Errorf(`tollgate_policy_reloads_total{result="success"} after SIGHUP = %v; want %v`, s, successes+1)
		}
		resp, id := decide(t)
		polAssert(t, resp, id, polAllow(map[string]string{"x-policy-version": "v4"}))
	})
}

// loadTally is what the load loop of TestPolicyReloadUnderLoad saw.
type loadTally struct {
	mu       sync.Mutex
	total    int
	versions map[string]int
	bad      []string // first few failed, denied or untagged answers
	nBad     int
}

func (l *loadTally) record(v string, problem string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if problem != "" {
		l.nBad++
		if len(l.bad) < 5 {
			l.bad = append(l.bad, problem)
		}
		return
	}
	l.versions[v]++
}

// TestPolicyReloadUnderLoad swaps the policy 20 times between two valid
// versions while Checks run continuously: no Check may fail or be denied,
// and both versions must be seen.
func TestPolicyReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		swaps      = 20
		workers    = 4
		perWorker  = 50000            // bound on requests per worker
		loadBudget = 20 * time.Second // bound on the whole load loop
	)
	tg, file, token := reloadSetup(t, "pol-load", versionPolicy("a"))
	tally := &loadTally{versions: map[string]int{}}
	base := polReq{token: token}.build(t, "pol-load")
	ctx, stop := context.WithTimeout(t.Context(), loadBudget)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for w := range workers {
		wg.Go(func() {
			for i := 0; i < perWorker && ctx.Err() == nil; i++ {
				req := proto.Clone(base).(*authv3.CheckRequest)
				h := req.GetAttributes().GetRequest().GetHttp()
				h.Id = fmt.Sprintf("pol-load-%d-%d", w, i)
				h.Headers["x-request-id"] = h.Id
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				resp, err := tg.client.Check(cctx, req)
				cancel()
				switch {
				case err != nil && ctx.Err() != nil:
					return
				case err != nil:
					tally.record("", fmt.Sprintf("Check error: %v", err))
				case !allowed(resp):
					tally.record("", polDescribe(resp))
				default:
					v := polHeaderValues(resp.GetOkResponse().GetHeaders(), "x-policy-version")
					if len(v) != 1 || (v[0] != "a" && v[0] != "b") {
						tally.record("", fmt.Sprintf("allowed with x-policy-version %q; want a or b", v))
						continue
					}
					tally.record(v[0], "")
				}
			}
		})
	}

	reloads := func(result string) float64 {
		return polMetric(t, tg, "tollgate_policy_reloads_total", map[string]string{"result": result})
	}
	_, _, st := polReadyz(t, tg)
	gen := st.Generation
	start := time.Now()
	for i := 1; i <= swaps && !t.Failed(); i++ {
		v := "b"
		if i%2 == 0 {
			v = "a"
		}
		polReplaceFile(t, file, versionPolicy(v))
		// Wait for this swap to be serving before the next one, so that
		// every swap is a reload of its own.
		ok, _ := polEventually(3*reloadWithin, 10*time.Millisecond, func() bool {
			_, _, st = polReadyz(t, tg)
			return st.Generation > gen
		})
		if !ok {
			t.Errorf("swap %d: /readyz policy generation still %d after %v (status %+v)", i, gen, 3*reloadWithin, st)
		}
		gen = st.Generation
	}
	swapTime := time.Since(start)
	stop()
	wg.Wait()

	tally.mu.Lock()
	defer tally.mu.Unlock()
	t.Logf("%d swaps in %v; %d Checks: %v", swaps, swapTime.Round(time.Millisecond), tally.total, tally.versions)
	t.Run("no failed or denied Check during the swaps", func(t *testing.T) {
		if tally.nBad != 0 {
			t.Errorf("%d of %d Checks failed or were denied during the swaps; want 0; first: %q", tally.nBad, tally.total, tally.bad)
		}
		if tally.total < 100 {
			t.Errorf("Checks sent during the swaps = %d; want at least 100 for the test to mean anything", tally.total)
		}
	})
	t.Run("both policy versions observed", func(t *testing.T) {
		if tally.versions["a"] == 0 || tally.versions["b"] == 0 {
			t.Errorf("x-policy-version values seen = %v; want both a and b", tally.versions)
		}
	})
	t.Run("every swap was a successful reload", func(t *testing.T) {
		if s, f := reloads("success"), reloads("failure"); s < 1+swaps || f != 0 {
			t.Errorf("tollgate_policy_reloads_total success, failure = %v, %v; want at least %d, 0", s, f, 1+swaps)
		}
	})
}
