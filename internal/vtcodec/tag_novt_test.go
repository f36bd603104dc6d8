//go:build !vtprotobuf

package vtcodec_test

// builtWithVT is false: without -tags vtprotobuf go-control-plane's Envoy
// messages have no VT methods and the codec takes the protobuf-go path.
const builtWithVT = false
