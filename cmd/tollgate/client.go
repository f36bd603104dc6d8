package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// client sends one Envoy-shaped CheckRequest and prints the answer. Exit
// status: 0 allowed, 1 denied, 2 error.
func client(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9191", "Tollgate gRPC address")
	host := fs.String("host", "example.local", "request :authority")
	path := fs.String("path", "/", "request path")
	method := fs.String("method", "GET", "request method")
	token := fs.String("token", "", "bearer token (sets authorization: Bearer …)")
	timeout := fs.Duration("timeout", 2*time.Second, "call timeout")
	var headers listFlag
	fs.Var(&headers, "H", "request header 'name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	h := map[string]string{":authority": *host, ":path": *path, ":method": *method, "x-request-id": fmt.Sprintf("cli-%d", time.Now().UnixNano())}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			fmt.Fprintf(stderr, "client: -H %q: want 'name: value'\n", kv)
			return 2
		}
		h[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if *token != "" {
		h["authorization"] = "Bearer " + *token
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(stderr, "client:", err)
		return 2
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{
		Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{
				Id: h["x-request-id"], Method: *method, Host: *host, Path: *path,
				Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
			},
		}},
	})
	if err != nil {
		fmt.Fprintln(stderr, "client:", err)
		return 2
	}
	if ok := resp.GetOkResponse(); ok != nil && resp.GetStatus().GetCode() == 0 {
		fmt.Fprintln(stdout, "ALLOWED")
		for _, hv := range ok.GetHeaders() {
			fmt.Fprintf(stdout, "  set    %s: %s\n", hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
		}
		for _, r := range ok.GetHeadersToRemove() {
			fmt.Fprintf(stdout, "  remove %s\n", r)
		}
		return 0
	}
	d := resp.GetDeniedResponse()
	fmt.Fprintf(stdout, "DENIED %d (%s)\n", d.GetStatus().GetCode(), resp.GetStatus().GetMessage())
	for _, hv := range d.GetHeaders() {
		fmt.Fprintf(stdout, "  %s: %s\n", hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
	}
	fmt.Fprintf(stdout, "  body: %s\n", d.GetBody())
	return 1
}
