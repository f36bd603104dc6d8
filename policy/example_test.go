package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/policy"
)

// exampleEngine writes rego to a temporary directory and loads it.
func exampleEngine(rego string, cfg policy.Config) (*policy.Engine, func()) {
	dir, err := os.MkdirTemp("", "policy-example")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o644); err != nil {
		panic(err)
	}
	cfg.Paths = []string{dir}
	// Examples document shapes, not speed: a loaded CI machine running
	// -race must not turn a first evaluation into a timeout.
	cfg.Timeout = 10 * time.Second
	e, err := policy.New(cfg, policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	return e, func() { _ = e.Stop(context.Background()); _ = os.RemoveAll(dir) }
}

func exampleRequest() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40112}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "42",
			Method: "GET",
			Path:   "/tenants/acme/invoices?page=2",
			Host:   "billing.example.com",
			Headers: map[string]string{
				":path":         "/tenants/acme/invoices?page=2",
				"authorization": "Bearer eyJhbGciOi...",
				"accept":        "application/json",
			},
		}},
	}}
}

// The input document a policy sees: the OPA-Envoy plugin's fields (with
// protojson names such as socketAddress), the parsed path and query, and
// Tollgate's identity and service. The bearer token is redacted.
func Example_input() {
	// The policy returns its whole input as a header, to show it.
	e, done := exampleEngine(`package tollgate.authz

allow := {"allowed": true, "headers": {"x-input": json.marshal(input)}}
`, policy.Config{})
	defer done()

	res, err := e.Eval(context.Background(), &policy.Input{
		Check: exampleRequest(),
		Identity: policy.Identity{
			Type: "jwt", Issuer: "https://idp.example.com", Subject: "alice",
			Claims:    map[string]any{"sub": "alice", "tenant": "acme", "roles": []any{"billing.viewer"}},
			Audiences: []string{"billing"},
		},
		Service: policy.Service{Name: "billing", Audiences: []string{"billing"}},
	})
	if err != nil {
		panic(err)
	}
	var doc any
	_ = json.Unmarshal([]byte(res.Headers[0].Value), &doc)
	out, _ := json.MarshalIndent(doc, "", "  ")
	fmt.Println(string(out))
	// Output:
	// {
	//   "attributes": {
	//     "request": {
	//       "http": {
	//         "headers": {
	//           ":path": "/tenants/acme/invoices?page=2",
	//           "accept": "application/json",
	//           "authorization": "[REDACTED]"
	//         },
	//         "host": "billing.example.com",
	//         "id": "42",
	//         "method": "GET",
	//         "path": "/tenants/acme/invoices?page=2"
	//       }
	//     },
	//     "source": {
	//       "address": {
	//         "socketAddress": {
	//           "address": "10.0.0.7",
	//           "portValue": 40112
	//         }
	//       }
	//     }
	//   },
	//   "identity": {
	//     "audiences": [
	//       "billing"
	//     ],
	//     "claims": {
	//       "roles": [
	//         "billing.viewer"
	//       ],
	//       "sub": "alice",
	//       "tenant": "acme"
	//     },
	//     "issuer": "https://idp.example.com",
	//     "subject": "alice",
	//     "type": "jwt"
	//   },
	//   "parsed_body": null,
	//   "parsed_path": [
	//     "tenants",
	//     "acme",
	//     "invoices"
	//   ],
	//   "parsed_query": {
	//     "page": [
	//       "2"
	//     ]
	//   },
	//   "service": {
	//     "audiences": [
	//       "billing"
	//     ],
	//     "name": "billing"
	//   },
	//   "truncated_body": false,
	//   "version": {
	//     "encoding": "protojson",
	//     "ext_authz": "v3"
	//   }
	// }
}

// A decision is a boolean, or an object with the OPA-Envoy plugin's
// fields, decoded into a Result.
func Example_decision() {
	e, done := exampleEngine(`package tollgate.authz

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"tenant_mismatch\"}",
}

allow := {
	"allowed": true,
	"headers": {"x-tenant-id": input.parsed_path[1]},
	"request_headers_to_remove": ["x-tenant-override"],
	"dynamic_metadata": {"tenant": input.parsed_path[1]},
} if input.identity.claims.tenant == input.parsed_path[1]
`, policy.Config{})
	defer done()

	for _, tenant := range []string{"acme", "globex"} {
		res, err := e.Eval(context.Background(), &policy.Input{
			Check:    exampleRequest(),
			Identity: policy.Identity{Type: "jwt", Subject: "alice", Claims: map[string]any{"tenant": tenant}},
		})
		if err != nil {
			panic(err)
		}
		out, _ := json.Marshal(res)
		fmt.Printf("tenant claim %s: %s\n", tenant, out)
	}
	// Output:
	// tenant claim acme: {"defined":true,"allowed":true,"headers":[{"key":"x-tenant-id","value":"acme"}],"request_headers_to_remove":["x-tenant-override"],"dynamic_metadata":{"tenant":"acme"}}
	// tenant claim globex: {"defined":true,"allowed":false,"headers":[{"key":"content-type","value":"application/json"}],"http_status":403,"body":"{\"error\":\"tenant_mismatch\"}"}
}

// An OPA-Envoy policy runs unchanged at data.envoy.authz.allow; an
// undefined decision denies without an error.
func Example_envoyPolicy() {
	e, done := exampleEngine(`package envoy.authz

import input.attributes.request.http as http_request

allow if {
	http_request.method == "GET"
	input.parsed_path[0] == "tenants"
}
`, policy.Config{Query: "data.envoy.authz.allow"})
	defer done()

	for _, method := range []string{"GET", "DELETE"} {
		req := exampleRequest()
		req.Attributes.Request.Http.Method = method
		res, err := e.Eval(context.Background(), &policy.Input{Check: req})
		fmt.Printf("%s: defined=%v allowed=%v err=%v\n", method, res.Defined, res.Allowed, err)
	}
	// Output:
	// GET: defined=true allowed=true err=<nil>
	// DELETE: defined=false allowed=false err=<nil>
}
