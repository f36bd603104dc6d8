package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// bundleServer serves one bundle at /bundles/authz.tar.gz with an ETag
// and answers 304 to a matching If-None-Match, counting both.
type bundleServer struct {
	mu          sync.Mutex
	body        []byte
	etag        string
	served      atomic.Int64
	notModified atomic.Int64
}

func (s *bundleServer) set(body []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag = body, etag
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/bundles/authz.tar.gz" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	body, etag := s.body, s.etag
	s.mu.Unlock()
	if strings.Contains(r.Header.Get("If-None-Match"), etag) {
		s.notModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.served.Add(1)
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/gzip")
	_, _ = w.Write(body)
}

// makeBundle builds a bundle tarball whose policy answers x-version v,
// signed with key (PEM, ES256) when key is not empty.
func makeBundle(t *testing.T, v, key string) []byte {
	t.Helper()
	raw := versioned(v)
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: v},
		Modules: []bundle.ModuleFile{{
			URL: "/authz/policy.rego", Path: "/authz/policy.rego",
			Raw: []byte(raw), Parsed: ast.MustParseModule(raw),
		}},
		Data: map[string]any{},
	}
	if key != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(key, "ES256", ""), "default", false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// keyPair returns an ES256 private key and its public key, both PEM.
func keyPair(t *testing.T) (private, public string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// A bundle is downloaded and served; unchanged polls are 304s thanks to
// the ETag; a new bundle replaces the policy.
func TestBundleDownloadWithETag(t *testing.T) {
	t.Parallel()
	srv := &bundleServer{}
	srv.set(makeBundle(t, "1", ""), `"v1"`)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	reg := prometheus.NewRegistry()
	e := newEngine(t, Config{Bundle: &BundleConfig{URL: hs.URL + "/bundles/authz.tar.gz", PollInterval: 20 * time.Millisecond}},
		WithRegisterer(reg), WithHTTPClient(hs.Client()))
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "first bundle served", func() bool { return e.Status().Ready })
	if got := version(t, e); got != "1" {
		t.Errorf("version = %q; want 1", got)
	}
	eventually(t, 5*time.Second, "a 304 on a later poll", func() bool { return srv.notModified.Load() >= 2 })
	if n := srv.served.Load(); n != 1 {
		t.Errorf("bundle served %d times; want once, then 304s", n)
	}

	srv.set(makeBundle(t, "2", ""), `"v2"`)
	eventually(t, 5*time.Second, "second bundle served", func() bool { return version(t, e) == "2" })
	st := e.Status()
	if st.Bundle == nil || st.Bundle.ETag != `"v2"` || st.Bundle.LastError != "" {
		t.Errorf("Status().Bundle = %+v; want ETag \"v2\" and no error", st.Bundle)
	}
	if got := counter(t, e.metrics.downloads.WithLabelValues("not_modified")); got < 2 {
		t.Errorf("tollgate_policy_bundle_downloads_total{result=not_modified} = %v; want ≥ 2", got)
	}
	if got := counter(t, e.metrics.reloads.WithLabelValues("success")); got != 2 {
		t.Errorf("tollgate_policy_reloads_total{result=success} = %v; want 2", got)
	}
}

// With a verification key, a signed bundle is served; a bundle signed by
// another key, or not signed, is rejected and the old policy keeps
// serving.
func TestBundleSignatureVerification(t *testing.T) {
	t.Parallel()
	priv, pub := keyPair(t)
	otherPriv, _ := keyPair(t)
	srv := &bundleServer{}
	srv.set(makeBundle(t, "1", priv), `"v1"`)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	e := newEngine(t, Config{Bundle: &BundleConfig{
		URL: hs.URL + "/bundles/authz.tar.gz", PollInterval: 20 * time.Millisecond,
		VerificationKey: pub, Algorithm: "ES256",
	}}, WithHTTPClient(hs.Client()))
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "signed bundle served", func() bool { return e.Status().Ready })

	for _, tt := range []struct {
		name string
		body []byte
		etag string
	}{
		{"signed by another key", makeBundle(t, "2", otherPriv), `"v2"`},
		{"not signed", makeBundle(t, "3", ""), `"v3"`},
	} {
		failures := counter(t, e.metrics.downloads.WithLabelValues("failure"))
		srv.set(tt.body, tt.etag)
		eventually(t, 5*time.Second, tt.name+": rejected", func() bool {
			return counter(t, e.metrics.downloads.WithLabelValues("failure")) > failures
		})
		if got := version(t, e); got != "1" {
			t.Errorf("%s: version = %q; want the old policy (1)", tt.name, got)
		}
		if st := e.Status(); st.Generation != 1 || st.Bundle == nil || st.Bundle.LastError == "" {
			t.Errorf("%s: Status() = %+v, bundle %+v; want generation 1 and a bundle error", tt.name, st, st.Bundle)
		}
	}
}

// A downloaded bundle that does not compile is rejected too.
func TestBundleThatDoesNotCompile(t *testing.T) {
	t.Parallel()
	srv := &bundleServer{}
	srv.set(makeBundle(t, "1", ""), `"v1"`)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	e := newEngine(t, Config{Bundle: &BundleConfig{URL: hs.URL + "/bundles/authz.tar.gz", PollInterval: 20 * time.Millisecond}})
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "first bundle", func() bool { return e.Status().Ready })
	bad := "package tollgate.authz\n\nallow if count(1) > 0\n"
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: "bad"}, Data: map[string]any{},
		Modules: []bundle.ModuleFile{{URL: "/p.rego", Path: "/p.rego", Raw: []byte(bad), Parsed: ast.MustParseModule(bad)}}}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	srv.set(buf.Bytes(), `"bad"`)
	eventually(t, 5*time.Second, "bad bundle rejected", func() bool {
		st := e.Status()
		return st.Bundle != nil && strings.Contains(st.Bundle.LastError, "p.rego")
	})
	if got := version(t, e); got != "1" {
		t.Errorf("version = %q; want 1", got)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
