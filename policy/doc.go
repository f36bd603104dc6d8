// Package policy evaluates Rego policies with embedded OPA on every Check,
// after authentication, with the request and the verified identity as
// input.
//
// The input document is the one the OPA-Envoy plugin builds for a v3
// CheckRequest (input.attributes with protojson field names, parsed_path,
// parsed_query, parsed_body, truncated_body, version), plus Tollgate's
// input.identity and input.service. It is built straight from the proto
// fields as plain Go values behind an ast.LazyObject, with no JSON round
// trip: OPA converts to AST only the members a policy reads. The
// decision is a boolean or the plugin's decision object, decoded once into
// a Result. Policies written for the plugin (package envoy.authz, query
// data.envoy.authz.allow) run unchanged, except that credential headers
// read "[REDACTED]" unless Config.ExposeCredentials is set.
//
// At each load, the rules a query can reach are read for the input paths
// they use (deps.go). When those are constant paths and no reachable rule
// calls a builtin whose result depends on more than its arguments, the
// query is a function of the values at those paths and of the loaded
// data: its decisions are cached per load, keyed by those values
// (deccache.go, inputkey.go), and a miss is evaluated on an input holding
// only those paths.
//
// Invariants:
//   - Eval never allows on an error, a timeout or an undefined decision;
//     it never panics on a policy's result.
//   - Eval only reads the current compiled generation through an atomic
//     pointer. A reload (file change, bundle, Reload) compiles a complete
//     new generation and swaps it in only if it compiled and, with
//     TestOnReload, passed its Rego tests; otherwise the previous one keeps
//     serving and Status reports the error with its file:line. In-flight
//     evaluations finish on the generation they started with.
//   - A cached decision is one evaluation made for a request that agreed
//     on every input path the query reads, under the same generation; a
//     request that cannot be input (400) is never answered from the cache,
//     and errors are never cached.
//   - No credential (bearer token, session cookie or id) reaches the input
//     unless exposed on purpose, nor ever the decision log.
package policy
