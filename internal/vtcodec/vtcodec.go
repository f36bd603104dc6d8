// Package vtcodec is a gRPC encoding.CodecV2 named "proto" that marshals with
// the vtprotobuf methods go-control-plane generates for its Envoy messages
// (SizeVT and MarshalToSizedBufferVTStrict) and uses
// google.golang.org/protobuf for every other message and for all unmarshaling.
//
// go-control-plane ships no UnmarshalVT, so decoding is exactly what grpc's
// default codec does. The codec is not registered globally: pass it
// explicitly with grpc.ForceServerCodecV2(Codec()) or
// grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec())). Because its name
// is "proto" the content-type stays application/grpc+proto and peers see no
// difference on the wire.
//
// go-control-plane compiles its *_vtproto.pb.go files only under the build
// tag "vtprotobuf". Without that tag no Envoy message has the VT methods and
// this codec behaves like grpc's default proto codec; HasVT reports which
// path a message takes so callers can refuse to run a "vt" benchmark that
// would silently measure the fallback.
//
// Invariants: Marshal output decodes with proto.Unmarshal to a message that
// is proto.Equal to the input; Marshal never returns a partially written
// buffer; every returned BufferSlice holds exactly one reference that gRPC
// frees.
package vtcodec

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the codec name and therefore the content-subtype on the wire. It
// deliberately equals grpc's default so Envoy and other peers are unaffected.
const Name = "proto"

// vtMarshaler is the subset of the vtprotobuf "marshal_strict" and "size"
// features that go-control-plane generates.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(dAtA []byte) (int, error)
}

// errSizeChanged means the message was mutated between SizeVT and marshal;
// gRPC, like protobuf-go, requires messages to be immutable while sent.
var errSizeChanged = errors.New("vtcodec: message size changed during marshal (concurrent mutation?)")

// codec is stateless, so one value is safe for concurrent use as CodecV2
// requires.
type codec struct{}

var _ encoding.CodecV2 = codec{}

// Codec returns the vtprotobuf-aware "proto" codec. It is safe for
// concurrent use and may be shared by any number of servers and clients.
func Codec() encoding.CodecV2 { return codec{} }

// HasVT reports whether Marshal takes the vtprotobuf path for v. For Envoy
// messages it is true only in binaries built with -tags vtprotobuf.
func HasVT(v any) bool {
	_, ok := v.(vtMarshaler)
	return ok
}

// Name implements encoding.CodecV2.
func (codec) Name() string { return Name }

// Marshal implements encoding.CodecV2.
func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(vtMarshaler); ok {
		return marshalVT(m)
	}
	return marshalProto(v)
}

// Unmarshal implements encoding.CodecV2. It mirrors grpc's default codec:
// go-control-plane generates no UnmarshalVT, and protobuf-go cannot read a
// mem.BufferSlice in pieces, so a multi-buffer message is first copied into
// one pooled buffer (a single-buffer message is used in place).
func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageV2Of(v)
	if m == nil {
		return fmt.Errorf("vtcodec: cannot unmarshal into %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// marshalVT sizes once and writes straight into the final buffer, which is
// where vtprotobuf saves over protobuf-go's reflection-driven fast path.
//
// Small messages (every CheckResponse and a typical CheckRequest) get an
// exact-size heap slice. The default pool's tier for them is 256 bytes, which
// mem.NewBuffer refuses to pool (it only pools capacities above mem's 1 KiB
// threshold), so asking the pool would allocate a bigger slice and never
// reuse it. Forcing them into the 4 KiB tier was measured: 1 alloc instead
// of 3 but ~20 ns slower per message, because the default pool zeroes the
// whole 4 KiB on every Get. Larger messages borrow from mem.DefaultBufferPool
// and gRPC returns the buffer after the write. That is the same policy as
// grpc's own proto codec, so a difference measured between the two codecs
// comes from the marshaler, not from buffer policy.
func marshalVT(m vtMarshaler) (mem.BufferSlice, error) {
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if err := fill(m, buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := fill(m, (*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// fill marshals m into buf, whose length must be m's size.
// MarshalToSizedBufferVTStrict writes backwards from the end of buf, so a
// short write would leave garbage at the front; treat it as an error rather
// than send a corrupt message.
func fill(m vtMarshaler, buf []byte) error {
	n, err := m.MarshalToSizedBufferVTStrict(buf)
	if err != nil {
		return fmt.Errorf("vtcodec: %w", err)
	}
	if n != len(buf) {
		return errSizeChanged
	}
	return nil
}

// marshalProto is grpc's default proto codec, kept byte-for-byte in
// behaviour so the fallback costs the same as not using this package.
func marshalProto(v any) (mem.BufferSlice, error) {
	m := messageV2Of(v)
	if m == nil {
		return nil, fmt.Errorf("vtcodec: cannot marshal %T, want proto.Message", v)
	}
	// UseCachedSize is only safe because Size ran just before on the same,
	// unmutated message.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func messageV2Of(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}
