package vtcodec_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/internal/vtcodec"
)

// stdCodec is grpc's default codec, the reference every result is compared
// against.
func stdCodec(t testing.TB) encoding.CodecV2 {
	t.Helper()
	c := encoding.GetCodecV2(grpcproto.Name)
	if c == nil {
		t.Fatal("grpc proto codec not registered")
	}
	return c
}

func socket(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// envoyCheckRequest is shaped like what Envoy's ext_authz filter sends.
// bodyPad grows the request past mem's pooling threshold when non-zero.
func envoyCheckRequest(bodyPad int) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socket("127.0.0.1", 52144)},
		Destination: &authv3.AttributeContext_Peer{Address: socket("127.0.0.1", 10000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "8d2c1f0e-5b7a-4f3e-9c1d-2a6b4e8f0c13",
			Method: "GET",
			Headers: map[string]string{
				":authority":    "api.example.test",
				":method":       "GET",
				":path":         "/v1/items?limit=10",
				"x-request-id":  "8d2c1f0e-5b7a-4f3e-9c1d-2a6b4e8f0c13",
				"user-agent":    "vtcodec-test/1",
				"authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2ln",
			},
			Host:     "api.example.test",
			Path:     "/v1/items?limit=10",
			Protocol: "HTTP/1.1",
			Scheme:   "http",
			Body:     strings.Repeat("x", bodyPad),
		}},
		ContextExtensions: map[string]string{"route": "items"},
	}}
}

func okResponse() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "x-user-id", Value: "user-1"},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
			HeadersToRemove: []string{"authorization"},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"sub":   structpb.NewStringValue("user-1"),
			"roles": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("reader")}}),
		}},
	}
}

func deniedResponse() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(code.Code_UNAUTHENTICATED), Message: "token_expired"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			Headers: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer error="invalid_token"`},
				Append: wrapperspb.Bool(false),
			}},
			Body: `{"error":"token_expired"}`,
		}},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"envoy-shaped CheckRequest", envoyCheckRequest(0)},
		{"CheckRequest above pooling threshold", envoyCheckRequest(4 << 10)},
		{"OK CheckResponse with headers and metadata", okResponse()},
		{"denied CheckResponse", deniedResponse()},
		{"empty OK CheckResponse", &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}},
		{"zero CheckResponse", &authv3.CheckResponse{}},
		{"non-VT message falls back to protobuf-go", &status.Status{Code: 7, Message: "denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vt, std := vtcodec.Codec(), stdCodec(t)

			// vt encode -> std decode: what an Envoy (or any protobuf peer)
			// receiving our bytes would see.
			data, err := vt.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("vtcodec Marshal(%T) error = %v", tt.msg, err)
			}
			got := tt.msg.ProtoReflect().New().Interface()
			if err := std.Unmarshal(data, got); err != nil {
				t.Fatalf("std Unmarshal(vtcodec bytes) error = %v", err)
			}
			data.Free()
			if !proto.Equal(got, tt.msg) {
				t.Errorf("std Unmarshal(vtcodec Marshal(m)) = %v; want %v", got, tt.msg)
			}

			// std encode -> vt decode: what we read from Envoy.
			data, err = std.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("std Marshal(%T) error = %v", tt.msg, err)
			}
			got = tt.msg.ProtoReflect().New().Interface()
			if err := vt.Unmarshal(data, got); err != nil {
				t.Fatalf("vtcodec Unmarshal(std bytes) error = %v", err)
			}
			data.Free()
			if !proto.Equal(got, tt.msg) {
				t.Errorf("vtcodec Unmarshal(std Marshal(m)) = %v; want %v", got, tt.msg)
			}
		})
	}
}

// A message split across several buffers (as gRPC delivers large frames)
// must decode the same as a contiguous one.
func TestUnmarshalMultiBuffer(t *testing.T) {
	t.Parallel()
	want := envoyCheckRequest(3000)
	raw, err := proto.Marshal(want)
	if err != nil {
		t.Fatalf("proto.Marshal error = %v", err)
	}
	third := len(raw) / 3
	data := mem.BufferSlice{
		mem.SliceBuffer(raw[:third]),
		mem.SliceBuffer(raw[third : 2*third]),
		mem.SliceBuffer(raw[2*third:]),
	}
	got := &authv3.CheckRequest{}
	if err := vtcodec.Codec().Unmarshal(data, got); err != nil {
		t.Fatalf("Unmarshal(3 buffers) error = %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("Unmarshal(3 buffers) = %v; want %v", got, want)
	}
}

// HasVT must agree with the build tag: a "vt" benchmark built without
// -tags vtprotobuf would otherwise silently measure the protobuf-go path.
func TestHasVTFollowsBuildTag(t *testing.T) {
	t.Parallel()
	for _, m := range []any{&authv3.CheckRequest{}, &authv3.CheckResponse{}} {
		if got := vtcodec.HasVT(m); got != builtWithVT {
			t.Errorf("HasVT(%T) = %v; want %v (built with -tags vtprotobuf: %v)", m, got, builtWithVT, builtWithVT)
		}
	}
	if vtcodec.HasVT(&status.Status{}) {
		t.Errorf("HasVT(*status.Status) = true; want false (genproto has no VT methods)")
	}
}

// fakeVT exercises the VT path whatever the build tags: it claims to be a
// vtprotobuf message and encodes its inner message with protobuf-go.
type fakeVT struct {
	*authv3.CheckRequest
	sizeDelta int // lie about the size to simulate concurrent mutation
}

func (f fakeVT) SizeVT() int { return proto.Size(f.CheckRequest) + f.sizeDelta }

func (f fakeVT) MarshalToSizedBufferVTStrict(dAtA []byte) (int, error) {
	b, err := proto.Marshal(f.CheckRequest)
	if err != nil {
		return 0, err
	}
	if len(b) > len(dAtA) {
		return 0, errShort
	}
	// Write backwards from the end, like generated vtprotobuf code does.
	copy(dAtA[len(dAtA)-len(b):], b)
	return len(b), nil
}

type shortErr struct{}

func (shortErr) Error() string { return "buffer too short" }

var errShort error = shortErr{}

func TestVTPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		pad       int
		sizeDelta int
		wantErr   bool
	}{
		{"small message uses exact heap slice", 0, 0, false},
		{"large message uses pooled buffer", 8 << 10, 0, false},
		{"size grew after SizeVT → error, not a corrupt frame", 0, -5, true},
		{"size shrank after SizeVT → error, not a corrupt frame", 0, +5, true},
		{"large message size shrank → error and buffer returned", 8 << 10, +5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := envoyCheckRequest(tt.pad)
			msg := fakeVT{CheckRequest: want, sizeDelta: tt.sizeDelta}
			if !vtcodec.HasVT(msg) {
				t.Fatalf("HasVT(fakeVT) = false; want true")
			}
			data, err := vtcodec.Codec().Marshal(msg)
			if tt.wantErr {
				if err == nil {
					data.Free()
					t.Fatalf("Marshal(fakeVT delta %d) error = nil; want error", tt.sizeDelta)
				}
				return
			}
			if err != nil {
				t.Fatalf("Marshal(fakeVT) error = %v", err)
			}
			defer data.Free()
			got := &authv3.CheckRequest{}
			if err := proto.Unmarshal(data.Materialize(), got); err != nil {
				t.Fatalf("proto.Unmarshal error = %v", err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("decode(Marshal(fakeVT)) = %v; want %v", got, want)
			}
		})
	}
}

func TestRejectsNonProto(t *testing.T) {
	t.Parallel()
	c := vtcodec.Codec()
	if _, err := c.Marshal(struct{}{}); err == nil {
		t.Errorf("Marshal(struct{}) error = nil; want error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer{}}, new(int)); err == nil {
		t.Errorf("Unmarshal(into *int) error = nil; want error")
	}
	if got := c.Name(); got != "proto" {
		t.Errorf("Name() = %q; want %q (content-type must stay application/grpc+proto)", got, "proto")
	}
}

// BenchmarkMarshal compares the two codecs on the messages an ext_authz
// server actually sends and receives. Run with -tags vtprotobuf, otherwise
// the "vt" rows measure the fallback and should match "std". Each iteration
// frees its buffers as gRPC would after the write, so pooling is realistic.
func BenchmarkMarshal(b *testing.B) {
	msgs := []struct {
		name string
		msg  proto.Message
	}{
		{"CheckResponse/empty-ok", &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}},
		{"CheckResponse/ok-headers-metadata", okResponse()},
		{"CheckResponse/denied", deniedResponse()},
		{"CheckRequest/envoy", envoyCheckRequest(0)},
	}
	codecs := []struct {
		name  string
		codec encoding.CodecV2
	}{
		{"std", stdCodec(b)},
		{"vt", vtcodec.Codec()},
	}
	for _, m := range msgs {
		for _, c := range codecs {
			b.Run(m.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					data, err := c.codec.Marshal(m.msg)
					if err != nil {
						b.Fatal(err)
					}
					data.Free()
				}
			})
		}
	}
}

// BenchmarkUnmarshal documents that decoding is identical for both codecs
// (go-control-plane ships no UnmarshalVT); it is a guard against the vt
// codec accidentally adding decode cost.
func BenchmarkUnmarshal(b *testing.B) {
	raw, err := proto.Marshal(envoyCheckRequest(0))
	if err != nil {
		b.Fatal(err)
	}
	codecs := []struct {
		name  string
		codec encoding.CodecV2
	}{
		{"std", stdCodec(b)},
		{"vt", vtcodec.Codec()},
	}
	for _, c := range codecs {
		b.Run("CheckRequest/envoy/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := &authv3.CheckRequest{}
				if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
