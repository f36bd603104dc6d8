package authz

import (
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/internal/vtcodec"
	"github.com/tollgate-dev/tollgate/jwks"
)

// startGRPC serves the front door on a loopback port, as Envoy would reach it.
func startGRPC(t *testing.T, c *Checker) authv3.AuthorizationClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(vtcodec.Codec()))
	authv3.RegisterAuthorizationServer(srv, NewGRPCServer(c))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func envoyRequest(host, path, authorization string, extra map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":path": path, ":method": "GET", "x-request-id": "0f2c6a1e-req"}
	if authorization != "" {
		h["authorization"] = authorization
	}
	for k, v := range extra {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "0f2c6a1e-req", Method: "GET", Host: host, Path: path, Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

func TestGRPCFrontDoor(t *testing.T) {
	t.Parallel()
	v := &fakeVerifier{
		tokens: map[string]*jwks.Token{"good": tok("alice", []string{"orders-api"}, map[string]any{"roles": []any{"a", "b"}})},
		errs:   map[string]error{"expired": reason.New(reason.TokenExpired), "boom": errInternal},
	}
	client := startGRPC(t, testChecker(t, v))

	t.Run("allowed → OK status, overwritten identity headers, credential removed", func(t *testing.T) {
		resp, err := client.Check(t.Context(), envoyRequest("orders.example.com", "/x", "Bearer good", map[string]string{"x-user-id": "mallory"}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != int32(codes.OK) || resp.GetOkResponse() == nil {
			t.Fatalf("Check = %v; want OK with an OkResponse", resp)
		}
		got := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("header %s append_action = %v; want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), h.GetAppendAction())
			}
			//lint:ignore SA1019 asserting that the deprecated field stays unset
			if h.GetAppend() != nil {
				t.Errorf("header %s uses the deprecated append field", h.GetHeader().GetKey())
			}
			got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		if got["x-user-id"] != "alice" || got["x-user-roles"] != "a,b" {
			t.Errorf("upstream headers = %v; want x-user-id alice, x-user-roles a,b", got)
		}
		if rm := resp.GetOkResponse().GetHeadersToRemove(); len(rm) == 0 || rm[0] != "authorization" {
			t.Errorf("headers_to_remove = %v; want authorization first", rm)
		}
	})

	t.Run("expired → UNAUTHENTICATED with 401, challenge and JSON body", func(t *testing.T) {
		resp, err := client.Check(t.Context(), envoyRequest("orders.example.com", "/", "Bearer expired", nil))
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() != int32(codes.Unauthenticated) || d.GetStatus().GetCode() != 401 {
			t.Fatalf("Check = %v; want UNAUTHENTICATED / 401", resp)
		}
		if resp.GetStatus().GetMessage() != string(reason.TokenExpired) {
			t.Errorf("status message = %q; want the reason code", resp.GetStatus().GetMessage())
		}
		var challenge, ctype string
		for _, h := range d.GetHeaders() {
			switch h.GetHeader().GetKey() {
			case "www-authenticate":
				challenge = h.GetHeader().GetValue()
			case "content-type":
				ctype = h.GetHeader().GetValue()
			}
		}
		if !strings.Contains(challenge, `error_description="token expired"`) || ctype != "application/json" {
			t.Errorf("denied headers = %v; want RFC 6750 challenge and JSON content type", d.GetHeaders())
		}
		if want := `{"error":"token expired","request_id":"0f2c6a1e-req"}`; d.GetBody() != want {
			t.Errorf("body = %s; want %s", d.GetBody(), want)
		}
	})

	t.Run("no service → PERMISSION_DENIED with 403", func(t *testing.T) {
		resp, err := client.Check(t.Context(), envoyRequest("nowhere.example.com", "/", "Bearer good", nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != int32(codes.PermissionDenied) || resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
			t.Errorf("Check = %v; want PERMISSION_DENIED / 403", resp)
		}
	})

	t.Run("internal failure → gRPC Internal error, no detail leaked", func(t *testing.T) {
		_, err := client.Check(t.Context(), envoyRequest("orders.example.com", "/", "Bearer boom", nil))
		if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
			t.Errorf("Check error = %v; want Internal with a fixed message", err)
		}
	})

	t.Run("expired deadline → DeadlineExceeded", func(t *testing.T) {
		ctx, cancel := contextWithDeadline(t, time.Now().Add(-time.Second))
		defer cancel()
		_, err := client.Check(ctx, envoyRequest("orders.example.com", "/", "Bearer good", nil))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("Check error = %v; want DeadlineExceeded", err)
		}
	})
}
