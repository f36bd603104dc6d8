package tollgate.authz_test

import data.tollgate.authz

req(method, path, roles) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"identity": {"type": "jwt", "subject": "alice", "claims": {"roles": roles}},
}

anonymous(method, path) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"identity": {"type": "anonymous", "claims": {}},
}

test_reader_lists_orders if authz.allow with input as req("GET", "/api/orders", ["orders.reader"])

test_reader_reads_one_order if authz.allow with input as req("GET", "/api/orders/42", ["orders.reader"])

test_reader_cannot_create if not authz.allow with input as req("POST", "/api/orders", ["orders.reader"])

test_writer_creates if authz.allow with input as req("POST", "/api/orders", ["orders.writer"])

test_writer_updates if authz.allow with input as req("PATCH", "/api/orders/42", ["orders.writer"])

test_writer_cannot_delete if not authz.allow with input as req("DELETE", "/api/orders/42", ["orders.writer"])

test_admin_deletes if authz.allow with input as req("DELETE", "/api/orders/42", ["admin"])

test_admin_area_any_method if authz.allow with input as req("PUT", "/admin/users/7", ["admin"])

test_admin_area_needs_admin if not authz.allow with input as req("GET", "/admin", ["orders.writer"])

test_roles_as_space_separated_string if authz.allow with input as req("GET", "/api/orders", "openid orders.reader")

test_no_roles_denied if not authz.allow with input as req("GET", "/api/orders", [])

test_unknown_path_denied if not authz.allow with input as req("GET", "/api/payments", ["admin"])

test_public_health_anonymous if authz.allow with input as anonymous("GET", "/healthz")

test_public_docs_anonymous if authz.allow with input as anonymous("GET", "/docs/api/index.html")

test_public_is_read_only if not authz.allow with input as anonymous("POST", "/healthz")

test_anonymous_denied_on_api if not authz.allow with input as anonymous("GET", "/api/orders")
