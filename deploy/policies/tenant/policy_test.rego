package tollgate.authz_test

import data.tollgate.authz

call(path, claims) := {
	"attributes": {"request": {"http": {"method": "GET", "path": path}}},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"identity": {"type": "jwt", "subject": "alice", "claims": claims},
}

test_own_tenant_allowed if {
	d := authz.allow with input as call("/tenants/acme/invoices", {"tenant": "acme"})
	d.allowed
	d.headers["x-tenant-id"] == "acme"
	d.request_headers_to_remove == ["x-tenant-override"]
}

test_other_tenant_denied if {
	d := authz.allow with input as call("/tenants/globex/invoices", {"tenant": "acme"})
	not d.allowed
	d.http_status == 403
	json.unmarshal(d.body).error == "tenant_mismatch"
}

test_missing_claim_denied if {
	d := authz.allow with input as call("/tenants/acme/invoices", {})
	not d.allowed
}

test_non_tenant_path_denied if {
	d := authz.allow with input as call("/invoices", {"tenant": "acme"})
	not d.allowed
}

test_empty_tenant_segment_denied if {
	d := authz.allow with input as call("/tenants//invoices", {"tenant": ""})
	not d.allowed
}

test_platform_admin_any_tenant if {
	d := authz.allow with input as call("/tenants/globex/invoices", {"tenant": "acme", "roles": ["platform-admin"]})
	d.allowed
	d.headers["x-tenant-id"] == "globex"
}

test_anonymous_denied if {
	d := authz.allow with input as {
		"parsed_path": ["tenants", "acme"],
		"identity": {"type": "anonymous", "claims": {"tenant": "acme"}},
	}
	not d.allowed
}
