package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// examples is where the shipped example policies live.
const examples = "../deploy/policies"

// quiet is a logger that drops everything below errors, so reload
// failures provoked on purpose do not clutter the test output.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))

// writeFiles writes name → content below dir, creating directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// policyDir writes a one-file policy into a fresh directory.
func policyDir(t *testing.T, rego string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": rego})
	return dir
}

func newEngine(t *testing.T, cfg Config, opts ...Option) *Engine {
	t.Helper()
	if cfg.Timeout == 0 {
		// Tests run in parallel, under -race, on small machines: the
		// default 50ms is for production, not for them.
		cfg.Timeout = 5 * time.Second
	}
	e, err := New(cfg, append([]Option{WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return e
}

// envoyRequest builds a CheckRequest shaped like the ones Envoy sends:
// pseudo-headers, x-request-id, addresses and the request time.
func envoyRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority":        "orders.example.com",
		":method":           method,
		":path":             path,
		":scheme":           "https",
		"accept":            "application/json",
		"user-agent":        "Go-http-client/2.0",
		"x-forwarded-proto": "https",
		"x-request-id":      "5f1c0d8e-33a7-4a4b-9a41-2c54f0a0b6de",
	}
	for k, v := range headers {
		h[k] = v
	}
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sock("10.244.1.17", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: sock("10.244.2.5", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "7353262178519736110", Method: method, Headers: h, Path: path,
				Host: "orders.example.com", Scheme: "https", Protocol: "HTTP/2",
			},
		},
	}}
}

// golden reads a CheckRequest fixture (protojson) from testdata.
func golden(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	bs, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(bs, &req); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &req
}

func jwtIdentity(sub string, claims string) Identity {
	var c map[string]any
	dec := json.NewDecoder(strings.NewReader(claims))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		panic(err)
	}
	return Identity{Type: IdentityJWT, Issuer: "https://idp.example.com", Subject: sub, Claims: c, Audiences: []string{"orders-api"}}
}
