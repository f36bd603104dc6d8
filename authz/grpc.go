package authz

import (
	"context"
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCServer is the ext_authz gRPC front door
// (envoy.service.auth.v3.Authorization/Check).
//
// A denial is an OK gRPC response whose CheckResponse.status is
// UNAUTHENTICATED or PERMISSION_DENIED (or UNAVAILABLE when keys are
// missing) and which carries the HTTP status, headers and body Envoy sends
// to the client. A gRPC error is returned only when the Check itself failed;
// Envoy then applies its failure_mode_allow setting, which should be false.
type GRPCServer struct {
	authv3.UnimplementedAuthorizationServer
	checker *Checker
}

var _ authv3.AuthorizationServer = (*GRPCServer)(nil)

// NewGRPCServer returns the front door for c.
func NewGRPCServer(c *Checker) *GRPCServer { return &GRPCServer{checker: c} }

// Check implements authv3.AuthorizationServer.
func (s *GRPCServer) Check(ctx context.Context, in *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	req := requestFromCheck(in)
	d, err := s.checker.Check(ctx, &req)
	if err != nil {
		return nil, grpcError(err)
	}
	return checkResponse(&d), nil
}

// requestFromCheck reads the fields the pipeline needs. The header map is
// Envoy's own (keys already lower-case); it is not copied.
func requestFromCheck(in *authv3.CheckRequest) Request {
	h := in.GetAttributes().GetRequest().GetHttp()
	r := Request{
		ID:      h.GetId(),
		Method:  h.GetMethod(),
		Host:    h.GetHost(),
		Path:    h.GetPath(),
		Headers: h.GetHeaders(),
		Check:   in,
	}
	if r.ID == "" {
		r.ID = r.Headers["x-request-id"]
	}
	if r.Host == "" {
		r.Host = r.Headers[":authority"]
	}
	if r.Path == "" {
		r.Path = r.Headers[":path"]
	}
	return r
}

// grpcError is the one place a failure becomes a gRPC status. Context
// errors keep their meaning so Envoy can tell a timeout from a fault; every
// other failure is Internal with a fixed message (details stay in our logs).
func grpcError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "check deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "check canceled")
	default:
		return status.Error(codes.Internal, "authorization check failed")
	}
}

func rpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 503:
		return codes.Unavailable
	case 500:
		return codes.Internal
	default:
		return codes.PermissionDenied
	}
}

var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

func checkResponse(d *Decision) *authv3.CheckResponse {
	if d.Allowed {
		ok := &authv3.OkHttpResponse{HeadersToRemove: d.Remove}
		ok.Headers = headerOptions(d.Upstream)
		ok.ResponseHeadersToAdd = headerOptions(d.Response)
		if len(d.QuerySet) > 0 {
			ok.QueryParametersToSet = make([]*corev3.QueryParameter, len(d.QuerySet))
			for i, q := range d.QuerySet {
				ok.QueryParametersToSet[i] = &corev3.QueryParameter{Key: q.Key, Value: q.Value}
			}
		}
		ok.QueryParametersToRemove = d.QueryRemove
		return &authv3.CheckResponse{
			Status:          okStatus,
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
			DynamicMetadata: d.DynamicMetadata,
		}
	}
	denied := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Body:   d.Body,
	}
	denied.Headers = make([]*corev3.HeaderValueOption, 0, len(d.Response)+1)
	if !hasHeader(d.Response, "content-type") {
		denied.Headers = append(denied.Headers, overwrite("content-type", "application/json"))
	}
	for _, h := range d.Response {
		denied.Headers = append(denied.Headers, overwrite(h.Key, h.Value))
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(rpcCode(d.Status)), Message: string(d.Reason)},
		HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
		DynamicMetadata: d.DynamicMetadata,
	}
}

// headerOptions converts headers into overwrite options backed by two
// allocations in all, rather than two per header.
func headerOptions(hs []Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	opts := make([]corev3.HeaderValueOption, len(hs))
	vals := make([]corev3.HeaderValue, len(hs))
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		vals[i].Key, vals[i].Value = h.Key, h.Value
		opts[i].Header = &vals[i]
		// Overwrite, never append: a client-sent x-user-id must not
		// survive next to ours.
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}

func hasHeader(hs []Header, k string) bool {
	for _, h := range hs {
		if h.Key == k {
			return true
		}
	}
	return false
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
