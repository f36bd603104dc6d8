package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// This file holds the helpers of the policy tests (policy_*_test.go): a
// config with a policy section, Envoy-shaped CheckRequests with a chosen
// method, path, body and peers, the expected polOutcome of one Check, and
// readers of /readyz and /metrics.

// polAudience is the audience every policy test service accepts.
const polAudience = "orders-api"

// polService is one services[] entry of a policy test config.
type polService struct {
	name, host string
	auth       string // required, optional or none
	query      string // policy_query; "" for policy.query
}

// polConfig is the config after the server section: p's issuer, the
// services, the identity headers (sub → x-user-id, roles → x-user-roles,
// authorization removed) and policySection, the YAML of the policy: key.
func polConfig(p *idp, logLevel string, services []polService, policySection string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log: {level: %q, format: \"json\"}\nissuers:\n%sservices:\n", logLevel, p.issuerConfig())
	for _, s := range services {
		fmt.Fprintf(&b, "  - name: %q\n    hosts: [%q]\n    path_prefixes: [\"/\"]\n    audiences: [%q]\n    auth: %q\n",
			s.name, s.host, polAudience, s.auth)
		if s.query != "" {
			fmt.Fprintf(&b, "    policy_query: %q\n", s.query)
		}
	}
	b.WriteString(`headers:
  claims_to_headers: {sub: "x-user-id", roles: "x-user-roles"}
  remove: ["authorization"]
tokens: {max_bytes: 16384}
`)
	b.WriteString(policySection)
	return b.String()
}

// polSection is a policy: section loading paths, with extra keys (each a
// full line indented by two spaces) appended.
func polSection(paths []string, extra ...string) string {
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = strconv.Quote(p)
	}
	s := "policy:\n  paths: [" + strings.Join(quoted, ", ") + "]\n"
	hasTimeout := false
	for _, e := range extra {
		s += "  " + e + "\n"
		hasTimeout = hasTimeout || strings.HasPrefix(e, "timeout:")
	}
	if !hasTimeout {
		// The 50ms default is for production; a -race run on a loaded
		// CI machine can deschedule one evaluation for longer, which
		// would be a timeout deny in a test that expects none.
		s += "  timeout: \"5s\"\n"
	}
	return s
}

// polCopyDir copies the regular files of src (recursively) into a new temp
// directory and returns it, so that a running tollgate watches a copy the
// test owns.
func polCopyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}

// polWriteDir writes the named files into a new temp directory and
// returns it.
func polWriteDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	return dir
}

// polReplaceFile writes text to a hidden temp file next to path and renames it
// over path, as editors and ConfigMap updates do: a reader never sees a
// half-written file.
func polReplaceFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s → %s: %v", tmp, path, err)
	}
}

// polEnvoyGolden is testdata/policy/envoy_checkrequest.json: the CheckRequest
// Envoy sends, with with_request_body, for a JSON POST through an
// Istio-style mesh (peer principals, context extensions, metadata).
var polEnvoyGolden = sync.OnceValues(func() (*authv3.CheckRequest, error) {
	b, err := os.ReadFile("testdata/policy/envoy_checkrequest.json")
	if err != nil {
		return nil, err
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("testdata/policy/envoy_checkrequest.json: %w", err)
	}
	return req, nil
})

// polReq describes one CheckRequest: the zero value of a field keeps what
// the golden request (testdata/check_request.json, GET with no body) has.
type polReq struct {
	host, method, path string
	token              string // "" sends no Authorization header
	headers            map[string]string
	principal, ip      string // source peer
	body               string // with content-type application/json
	// envoy starts from testdata/policy/envoy_checkrequest.json instead.
	envoy bool
	// mutate, when set, edits the request last.
	mutate func(*authv3.CheckRequest)
}

// build returns the CheckRequest of r with request id id.
func (r polReq) build(t *testing.T, id string) *authv3.CheckRequest {
	t.Helper()
	golden, err := goldenRequest()
	if r.envoy {
		golden, err = polEnvoyGolden()
	}
	if err != nil {
		t.Fatalf("golden CheckRequest: %v", err)
	}
	req := proto.Clone(golden).(*authv3.CheckRequest)
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	h.Id = id
	h.Headers["x-request-id"] = id
	if r.host != "" {
		h.Host = r.host
		h.Headers[":authority"] = r.host
	}
	if r.method != "" {
		h.Method = r.method
		h.Headers[":method"] = r.method
	}
	if r.path != "" {
		h.Path = r.path
		h.Headers[":path"] = r.path
	}
	if r.body != "" {
		h.Body, h.Size = r.body, int64(len(r.body))
		h.Headers["content-type"] = "application/json"
		h.Headers["content-length"] = strconv.Itoa(len(r.body))
	}
	for k, v := range r.headers {
		h.Headers[k] = v
	}
	if r.token != "" {
		h.Headers["authorization"] = "Bearer " + r.token
	} else {
		delete(h.Headers, "authorization")
	}
	if r.principal != "" {
		a.Source.Principal = r.principal
	}
	if r.ip != "" {
		a.Source.Address.GetSocketAddress().Address = r.ip
	}
	if r.mutate != nil {
		r.mutate(req)
	}
	return req
}

// polOutcome is what one Check must answer.
type polOutcome struct {
	code   codes.Code // CheckResponse.status.code
	reason string     // CheckResponse.status.message of a denial
	http   int        // HTTP status of a denial
	// body is the exact denial body; when "", the body must be Tollgate's
	// own {"error": errText, "request_id": <id>}.
	body    string
	errText string

	// set are headers that must be present exactly once (case-insensitive
	// name) with this value: upstream headers of an allowed request,
	// client headers of a denial.
	set map[string]string
	// remove must be in headers_to_remove (allowed only).
	remove []string
	// absent must appear in no header option (case-insensitive).
	absent []string
}

func polAllow(set map[string]string) polOutcome { return polOutcome{code: codes.OK, set: set} }

func polDenied(status int) polOutcome {
	code := codes.PermissionDenied
	if status == http.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	return polOutcome{code: code, reason: "policy_denied", http: status, errText: "denied by policy"}
}

// polCredentialMissing is the 401 of an anonymous caller a policy refused on
// an auth: optional service.
var polCredentialMissing = polOutcome{
	code: codes.Unauthenticated, reason: "credential_missing", http: http.StatusUnauthorized,
	errText: "credential missing", set: map[string]string{"www-authenticate": `Bearer realm="tollgate"`},
}

func polFailure(reason, text string) polOutcome {
	return polOutcome{code: codes.Internal, reason: reason, http: http.StatusInternalServerError, errText: text}
}

// polHeaderValues returns the values of every option named key, whatever
// the case of the name.
func polHeaderValues(hs []*corev3.HeaderValueOption, key string) []string {
	var out []string
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), key) {
			out = append(out, h.GetHeader().GetValue())
		}
	}
	return out
}

func polDescribe(resp *authv3.CheckResponse) string {
	if ok := resp.GetOkResponse(); ok != nil {
		return fmt.Sprintf("allowed (status %d, headers %v, remove %v)", resp.GetStatus().GetCode(), ok.GetHeaders(), ok.GetHeadersToRemove())
	}
	d := resp.GetDeniedResponse()
	return fmt.Sprintf("denied %d %q (status %d, body %q)", d.GetStatus().GetCode(), resp.GetStatus().GetMessage(), resp.GetStatus().GetCode(), d.GetBody())
}

// polAssert checks resp, the answer to request id, against want.
func polAssert(t *testing.T, resp *authv3.CheckResponse, id string, want polOutcome) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != want.code {
		t.Fatalf("Check status = %v; want %v; response: %s", got, want.code, polDescribe(resp))
	}
	var hs []*corev3.HeaderValueOption
	if want.code == codes.OK {
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("Check OkResponse = nil; want one; response: %s", polDescribe(resp))
		}
		hs = ok.GetHeaders()
		for _, h := range hs {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || usesDeprecatedAppend(h) {
				t.Errorf("Check header %q: append_action = %v (deprecated append set: %v); want only OVERWRITE_IF_EXISTS_OR_ADD",
					h.GetHeader().GetKey(), h.GetAppendAction(), usesDeprecatedAppend(h))
			}
		}
		for _, key := range want.remove {
			if !slices.Contains(ok.GetHeadersToRemove(), key) {
				t.Errorf("Check headers_to_remove = %v; want it to contain %q", ok.GetHeadersToRemove(), key)
			}
		}
	} else {
		d := resp.GetDeniedResponse()
		if d == nil {
			t.Fatalf("Check DeniedResponse = nil; want HTTP %d; response: %s", want.http, polDescribe(resp))
		}
		if got := resp.GetStatus().GetMessage(); got != want.reason {
			t.Errorf("Check status message = %q; want %q", got, want.reason)
		}
		if got := int(d.GetStatus().GetCode()); got != want.http {
			t.Errorf("Check denied HTTP status = %d; want %d", got, want.http)
		}
		hs = d.GetHeaders()
		if want.body != "" {
			if d.GetBody() != want.body {
				t.Errorf("Check denied body = %q; want %q", d.GetBody(), want.body)
			}
		} else {
			var body struct {
				Error     string `json:"error"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error != want.errText || body.RequestID != id {
				t.Errorf("Check denied body = %s; want {\"error\":%q,\"request_id\":%q}", d.GetBody(), want.errText, id)
			}
		}
	}
	for key, v := range want.set {
		got := polHeaderValues(hs, key)
		if len(got) != 1 || got[0] != v {
			t.Errorf("Check header %q = %q; want exactly [%q] (all headers: %v)", key, got, v, hs)
		}
	}
	for _, key := range want.absent {
		if got := polHeaderValues(hs, key); len(got) != 0 {
			t.Errorf("Check header %q = %q; want it absent", key, got)
		}
	}
}

// polCase is one request and its polOutcome.
type polCase struct {
	name string
	req  polReq
	want polOutcome
	// also, when set, checks more of the response.
	also func(t *testing.T, resp *authv3.CheckResponse)
}

// polRunCases sends every case in parallel subtests; request ids are
// prefix-<index>.
func polRunCases(t *testing.T, tg *tollgate, prefix string, cases []polCase) {
	t.Helper()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := fmt.Sprintf("%s-%02d", prefix, i)
			resp := tg.check(t, tc.req.build(t, id))
			polAssert(t, resp, id, tc.want)
			if tc.also != nil {
				tc.also(t, resp)
			}
		})
	}
}

// polStatus is the "policy" member of GET /readyz.
type polStatus struct {
	Ready      bool      `json:"ready"`
	Generation uint64    `json:"generation"`
	LoadedAt   time.Time `json:"loaded_at"`
	LastReload time.Time `json:"last_reload"`
	LastError  string    `json:"last_error"`
}

// readyz returns the /readyz status code, its ready flag and its policy
// member (nil when absent).
func polReadyz(t *testing.T, tg *tollgate) (int, bool, *polStatus) {
	t.Helper()
	status, body := tg.get(t, "/readyz")
	var got struct {
		Ready  bool       `json:"ready"`
		Policy *polStatus `json:"policy"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("GET /readyz body %q: %v", body, err)
	}
	return status, got.Ready, got.Policy
}

// metric returns the value of the sample name{labels} of GET /metrics,
// summing the series that carry at least these labels.
func polMetric(t *testing.T, tg *tollgate, name string, labels map[string]string) float64 {
	t.Helper()
	status, body := tg.get(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d; want 200", status)
	}
	var sum float64
	found := false
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, name)
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var lbls, val string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			lbls, val = rest[1:end], strings.TrimSpace(rest[end+1:])
		case strings.HasPrefix(rest, " "):
			val = strings.TrimSpace(rest)
		default:
			continue // a longer metric name
		}
		have := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(lbls, -1) {
			have[l[1]] = l[2]
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("GET /metrics has no sample %s%v", name, labels)
	}
	return sum
}

// polEventually calls f every interval until it returns true or within
// passes; it returns whether f succeeded and how long it took.
func polEventually(within, interval time.Duration, f func() bool) (bool, time.Duration) {
	start := time.Now()
	for {
		if f() {
			return true, time.Since(start)
		}
		if time.Since(start) > within {
			return false, time.Since(start)
		}
		time.Sleep(interval)
	}
}
