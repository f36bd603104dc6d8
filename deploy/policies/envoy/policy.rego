# A policy written for the OPA-Envoy plugin, unchanged: it reads only
# input.attributes (protojson field names) and input.parsed_path, so it
# gives the same decisions under the plugin and under Tollgate.
#
# Query: data.envoy.authz.allow.
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

# Anyone may read the product catalogue.
allow if {
	http_request.method in {"GET", "HEAD"}
	input.parsed_path[0] == "products"
}

# Only the orders workload, by its mTLS identity (as Istio sets it), may
# change the catalogue.
allow if {
	http_request.method in {"POST", "PUT", "DELETE"}
	input.parsed_path[0] == "products"
	input.attributes.source.principal == "spiffe://cluster.local/ns/shop/sa/orders"
}

# Health checks from inside the cluster network.
allow if {
	http_request.method == "GET"
	input.parsed_path == ["healthz"]
	net.cidr_contains("10.0.0.0/8", input.attributes.source.address.socketAddress.address)
}
