package envoy.authz_test

import data.envoy.authz

req(method, path, principal, ip) := {
	"attributes": {
		"source": {
			"principal": principal,
			"address": {"socketAddress": {"address": ip, "portValue": 51234}},
		},
		"request": {"http": {"method": method, "path": path, "headers": {":path": path}}},
	},
	"parsed_path": split(trim_left(path, "/"), "/"),
}

orders := "spiffe://cluster.local/ns/shop/sa/orders"

web := "spiffe://cluster.local/ns/shop/sa/web"

test_anyone_reads_products if authz.allow with input as req("GET", "/products/42", "", "203.0.113.9")

test_web_cannot_write_products if not authz.allow with input as req("POST", "/products", web, "10.1.2.3")

test_orders_writes_products if authz.allow with input as req("PUT", "/products/42", orders, "10.1.2.3")

test_health_from_cluster if authz.allow with input as req("GET", "/healthz", "", "10.9.8.7")

test_health_from_outside_denied if not authz.allow with input as req("GET", "/healthz", "", "198.51.100.4")

test_other_paths_denied if not authz.allow with input as req("GET", "/admin", orders, "10.1.2.3")
