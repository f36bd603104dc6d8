package tollgate.authz

default allow := false

allow if {
	some route in data.rbac.routes
	method_matches(route.methods)
	some pattern in route.paths
	glob.match(pattern, ["/"], request_path)
	some role in input.identity.claims.roles
	route.permission in data.rbac.role_permissions[role]
}

method_matches(methods) if "*" in methods

method_matches(methods) if input.attributes.request.http.method in methods

request_path := concat("/", array.concat([""], input.parsed_path))
