package main

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// sessionCookie is the session cookie name in the generated config and in
// the requests of the session rows.
const sessionCookie = "tollgate_session"

// benchRedisTimeout replaces the 50ms default of sessions.redis.timeout. On
// the shared 2-core machine a scheduling stall of 50ms happens now and then;
// a few lookups time out, five in a row open the circuit breaker, and the
// next second of Checks is answered 503 without Redis, which is not the path
// the row measures (the run then fails). 150ms keeps the bound below the
// client's 200ms call deadline, which the other rows are exposed to as well.
const benchRedisTimeout = 150 * time.Millisecond

// tollgateSetup is what one Tollgate row's config says beyond the common
// part.
type tollgateSetup struct {
	GRPCAddr  string
	HTTPAddr  string
	IssuerURL string
	JWKSURL   string
	// PolicyDir, when set, enables the Rego policy loaded from it.
	PolicyDir string
	// NoDecisionCache evaluates the policy on every Check.
	NoDecisionCache bool
	// Sessions, when set, enables Redis sessions, the admin API that
	// creates them and the internal token minted for every session.
	Sessions *sessionSetup
}

// sessionSetup configures the session rows.
type sessionSetup struct {
	AdminAddr      string
	AdminTokenFile string
	KeysDir        string // file key store for the internal-token keys
	RedisAddr      string
	LocalCache     bool
}

// tollgateConfig renders the Tollgate config used by the benchmark. Tollgate
// rejects unknown keys, so this writes exactly keys of the config contract:
// one issuer (the in-process JWKS server), one catch-all service requiring
// a credential with aud "bench", and the header rules whose cost is part of
// what is measured; then the optional sections of the row. Everything not
// written keeps Tollgate's defaults, which is what a deployment starts from
// (for sessions: idle 30m, cache TTL 1s; for internal tokens: ES256, TTL
// 60s, reuse cache on), except the Redis timeout (benchRedisTimeout).
//
// Strings are emitted as YAML double-quoted scalars via strconv.Quote; for
// the ASCII values used here Go and YAML escaping agree.
func tollgateConfig(s tollgateSetup) []byte {
	q := strconv.Quote
	b := fmt.Appendf(nil, `server:
  grpc_address: %s
  http_address: %s
`, q(s.GRPCAddr), q(s.HTTPAddr))
	if ss := s.Sessions; ss != nil {
		b = fmt.Appendf(b, "  admin_address: %s\n", q(ss.AdminAddr))
	}
	b = fmt.Appendf(b, `log:
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
`, q(s.IssuerURL), q(s.JWKSURL), q(benchAudience))
	if s.PolicyDir != "" {
		b = fmt.Appendf(b, `policy:
  paths: [%s]
`, q(s.PolicyDir))
		if s.NoDecisionCache {
			b = append(b, "  decision_cache: {enabled: false}\n"...)
		}
	}
	if ss := s.Sessions; ss != nil {
		b = fmt.Appendf(b, `internal_token:
  enabled: true
  claims: ["roles"]
keys:
  store: "file"
  dir: %s
sessions:
  store: "redis"
  redis:
    addrs: [%s]
    timeout: %s
  cookie: %s
  local_cache: %t
admin:
  token_file: %s
`, q(ss.KeysDir), q(ss.RedisAddr), q(benchRedisTimeout.String()), q(sessionCookie), ss.LocalCache, q(ss.AdminTokenFile))
	}
	return b
}

// benchPolicy is a typical role → permission RBAC policy
// (testdata/rbac): a route table maps methods and path globs to a
// permission, and a role table grants permissions to the roles in the
// caller's "roles" claim. Every request the benchmark sends (GET
// /api/v1/items by a "reader") is allowed; the same token is refused a
// DELETE. authz's in-process policy benchmark loads the same files, so
// the two measurements are of one policy.
//
//go:embed testdata/rbac/policy.rego
var benchPolicy string

//go:embed testdata/rbac/data.json
var benchPolicyData string

// writePolicy writes benchPolicy and its data document into dir.
func writePolicy(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(benchPolicy), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "data.json"), []byte(benchPolicyData), 0o644)
}
