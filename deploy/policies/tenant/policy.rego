# Tenant isolation.
#
# Everything lives under /tenants/{tenant}/...; a caller may only reach the
# tenant named by the "tenant" claim of its verified token, unless it holds
# the "platform-admin" role. The decision is the OPA-Envoy decision object:
# an allowed request carries the tenant upstream in x-tenant-id, and a
# denial is a 403 with a JSON body naming the reason.
#
# Query: data.tollgate.authz.allow (Tollgate's default).
package tollgate.authz

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"tenant_mismatch\"}",
}

allow := {
	"allowed": true,
	"headers": {"x-tenant-id": path_tenant},
	"request_headers_to_remove": ["x-tenant-override"],
} if {
	input.identity.type != "anonymous"
	tenant_allowed
}

# path_tenant is the tenant the request addresses.
path_tenant := input.parsed_path[1] if {
	input.parsed_path[0] == "tenants"
	input.parsed_path[1] != ""
}

tenant_allowed if input.identity.claims.tenant == path_tenant

tenant_allowed if {
	path_tenant
	"platform-admin" in input.identity.claims.roles
}
