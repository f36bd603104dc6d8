package main

import (
	"fmt"
	"strconv"
)

// tollgateConfig renders the Tollgate config used by the benchmark. Tollgate
// rejects unknown keys, so this writes exactly the keys of the config
// contract and nothing else: one issuer (the in-process JWKS server), one
// catch-all service requiring a token with aud "bench", and the header rules
// whose cost is part of what is measured.
//
// Strings are emitted as YAML double-quoted scalars via strconv.Quote; for
// the ASCII values used here Go and YAML escaping agree.
func tollgateConfig(grpcAddr, httpAddr, issuerURL, jwksURL string) []byte {
	q := strconv.Quote
	return fmt.Appendf(nil, `server:
  grpc_address: %s
  http_address: %s
log:
  level: "warn"
issuers:
  - issuer: %s
    jwks_uri: %s
    algorithms: ["ES256"]
    leeway: "30s"
services:
  - name: "bench"
    hosts: ["*"]
    path_prefixes: ["/"]
    audiences: [%s]
    auth: "required"
headers:
  claims_to_headers: {sub: "x-user-id", roles: "x-user-roles"}
  remove: ["authorization"]
`, q(grpcAddr), q(httpAddr), q(issuerURL), q(jwksURL), q(benchAudience))
}
