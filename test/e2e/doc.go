// Package e2e holds Tollgate's end-to-end tests. They build the real
// tollgate binary (with the vtprotobuf tag, as shipped), start it as a
// separate process against JWKS servers run by the test, and speak to it
// only through its public surfaces: ext_authz gRPC, the HTTP endpoints, the
// command line and its JSON logs.
//
// Invariants: every process a test starts listens on loopback only, is
// stopped with SIGTERM in t.Cleanup and must then exit 0; every network
// call is bounded in number and time.
package e2e
