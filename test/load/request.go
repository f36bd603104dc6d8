package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Shape of the request Envoy's ext_authz filter would send for a plain
// HTTP/1.1 GET arriving on a listener at benchListener.
const (
	benchAuthority = "bench.tollgate.test"
	benchPath      = "/api/v1/items?limit=20"
	benchUserAgent = "tollgate-load/1"
	benchListener  = 10000
	// numRequestIDs distinct x-request-id values are cycled; enough that
	// nothing can usefully cache on them, small enough (≈3 MiB) to build once.
	numRequestIDs = 1 << 16
)

// requestSource holds everything workers need to produce distinct,
// Envoy-shaped CheckRequests without allocating on the hot path: the
// credential header values and request IDs are built once, up front.
type requestSource struct {
	// credHeader carries the credential: "authorization" for bearer
	// tokens, "cookie" for sessions.
	credHeader string
	creds      []string // credHeader values, cycled by send index
	ids        []string // request IDs, cycled by send index
}

// newRequestSource prepares "authorization: Bearer <jwt>" values for
// tokens. The IDs come from a fixed seed so runs are reproducible.
func newRequestSource(tokens []string) (*requestSource, error) {
	creds := make([]string, len(tokens))
	for i, t := range tokens {
		creds[i] = "Bearer " + t
	}
	return newSource("authorization", creds)
}

// newSessionSource prepares the cookie header a browser holding session id
// would send: the session cookie after an unrelated one, so Tollgate has to
// find it and pass the other cookie upstream. There is no authorization
// header.
func newSessionSource(cookieName string, ids []string) (*requestSource, error) {
	creds := make([]string, len(ids))
	for i, id := range ids {
		creds[i] = "lang=en-GB; " + cookieName + "=" + id
	}
	return newSource("cookie", creds)
}

func newSource(credHeader string, creds []string) (*requestSource, error) {
	if len(creds) == 0 {
		return nil, fmt.Errorf("no credentials")
	}
	s := &requestSource{
		credHeader: credHeader,
		creds:      creds,
		ids:        make([]string, numRequestIDs),
	}
	rng := rand.New(rand.NewPCG(0x7011, 0x6a7e))
	for i := range s.ids {
		s.ids[i] = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x",
			rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff,
			0x8000|rng.Uint32()&0x3fff, rng.Uint64()&0xffffffffffff)
	}
	return s, nil
}

// reqBuilder owns one mutable CheckRequest per worker. Check is synchronous
// and the request is fully marshaled before it returns, so the worker may
// rewrite the few per-call fields in place for its next call. Assigning to
// existing map keys does not allocate, which keeps the generator's own cost
// out of the measurement.
type reqBuilder struct {
	src  *requestSource
	req  *authv3.CheckRequest
	http *authv3.AttributeContext_HttpRequest
}

// builder returns a request builder for worker w; w only varies the source
// port, as separate downstream connections would.
func (s *requestSource) builder(w int) *reqBuilder {
	h := &authv3.AttributeContext_HttpRequest{
		Method: "GET",
		Headers: map[string]string{
			":authority":   benchAuthority,
			":method":      "GET",
			":path":        benchPath,
			"x-request-id": s.ids[0],
			"user-agent":   benchUserAgent,
			s.credHeader:   s.creds[0],
		},
		Host:     benchAuthority,
		Path:     benchPath,
		Protocol: "HTTP/1.1",
		Scheme:   "http",
		Id:       s.ids[0],
	}
	return &reqBuilder{
		src:  s,
		http: h,
		req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: socketAddr("127.0.0.1", uint32(40000+w%20000))},
			Destination: &authv3.AttributeContext_Peer{Address: socketAddr("127.0.0.1", benchListener)},
			Request: &authv3.AttributeContext_Request{
				Time: timestamppb.New(time.Now()),
				Http: h,
			},
		}},
	}
}

// at rewrites the builder's request for send number i and returns it. The
// credential and the ID are chosen by i, so a run cycles through every
// token (or session) in order.
func (b *reqBuilder) at(i uint64) *authv3.CheckRequest {
	id := b.src.ids[i%uint64(len(b.src.ids))]
	b.http.Id = id
	b.http.Headers["x-request-id"] = id
	b.http.Headers[b.src.credHeader] = b.src.creds[i%uint64(len(b.src.creds))]
	return b.req
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
