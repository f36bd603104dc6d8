//go:build vtprotobuf

package vtcodec_test

// builtWithVT is true when go-control-plane's *_vtproto.pb.go files are
// compiled in, i.e. the test binary was built with -tags vtprotobuf.
const builtWithVT = true
