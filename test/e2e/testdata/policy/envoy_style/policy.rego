# A policy written for the OPA-Envoy plugin as its documentation writes
# them: package envoy.authz, decision data.envoy.authz.allow (a boolean)
# or data.envoy.authz.result (the decision object). It reads only what
# Envoy sends: input.attributes, input.parsed_path, input.parsed_query and
# input.parsed_body.
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

# Orders: a POST with a JSON body from the web workload; the quantity
# limit depends on the plan Envoy's header_to_metadata filter recorded.
allow if {
	http_request.method == "POST"
	input.parsed_path == ["shop", "orders"]
	input.parsed_query.src == ["app"]
	input.attributes.source.principal == "spiffe://cluster.local/ns/shop/sa/web"
	input.parsed_body.quantity <= max_quantity[plan]
}

# Items: reads on the shop virtual host, over TLS.
allow if {
	http_request.method == "GET"
	input.parsed_path[0] == "items"
	input.attributes.contextExtensions.virtual_host == "shop"
	input.attributes.tlsSession.sni == http_request.host
	http_request.headers["x-forwarded-proto"] == "https"
}

plan := input.attributes.metadataContext.filterMetadata["envoy.filters.http.header_to_metadata"].plan

max_quantity := {"gold": 100, "free": 1}

# The decision object, as in the plugin's documentation.
status_code := 200 if allow

status_code := 403 if not allow

headers["x-ext-auth-allow"] := "yes" if allow

headers["x-ext-auth-allow"] := "no" if not allow

# What the policy saw of the credential: Tollgate redacts it by default.
headers["x-saw-authorization"] := object.get(http_request.headers, "authorization", "none")

body := "Unauthorized Request" if not allow

result["allowed"] := allow

result["headers"] := headers

result["http_status"] := status_code

result["body"] := body
