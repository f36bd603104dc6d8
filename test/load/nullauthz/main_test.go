package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestServesOKAndMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-codec", "proto"}, pw, slog.New(slog.DiscardHandler))
		_ = pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading address line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var grpcAddr, httpAddr string
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, "grpc="); ok {
			grpcAddr = v
		}
		if v, ok := strings.CutPrefix(f, "http="); ok {
			httpAddr = v
		}
	}
	if !strings.HasPrefix(grpcAddr, "127.0.0.1:") || !strings.HasPrefix(httpAddr, "127.0.0.1:") {
		t.Fatalf("address line = %q; want grpc=127.0.0.1:PORT http=127.0.0.1:PORT", line)
	}

	cc, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cc.Close()
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{})
	if err != nil {
		t.Fatalf("Check() error = %v", err)
	}
	if resp.GetStatus().GetCode() != 0 || resp.GetOkResponse() == nil {
		t.Errorf("Check() = %v; want status OK with an OkHttpResponse", resp)
	}

	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/readyz", []string{"ok"}},
		{"/metrics", []string{"go_memstats_mallocs_total ", "process_cpu_seconds_total "}},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+tc.path, nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %s; want 200", tc.path, res.Status)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("GET %s body lacks %q", tc.path, w)
			}
		}
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run() after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run() did not return within 10s of cancel")
	}
}

func TestRejectsBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"unknown codec → error", []string{"-codec", "json"}},
		{"wildcard listen address → error", []string{"-grpc-addr", ":0"}},
		{"non-loopback http address → error", []string{"-http-addr", "10.1.1.1:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, io.Discard, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Errorf("run(%q) = nil; want error", tt.args)
			}
		})
	}
}
