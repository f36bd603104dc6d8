# Role-based access for a REST API.
#
# A route table (data.rbac, in data.yaml) maps methods and path patterns to
# the roles that may call them. The caller's roles are the verified token's
# "roles" claim: an array, or a space-separated string. Public routes need
# no identity at all.
#
# Query: data.tollgate.authz.allow (Tollgate's default).
package tollgate.authz

default allow := false

allow if {
	some route in data.rbac.public
	route_matches(route)
}

allow if {
	input.identity.type != "anonymous"
	some route in data.rbac.routes
	route_matches(route)
	some role in route.roles
	role in roles
}

# roles is the set of the caller's roles.
roles contains role if {
	is_array(input.identity.claims.roles)
	some role in input.identity.claims.roles
}

roles contains role if {
	is_string(input.identity.claims.roles)
	some role in split(input.identity.claims.roles, " ")
	role != ""
}

# route_matches holds when the method is one of the route's ("*" for any)
# and the percent-decoded path matches one of its glob patterns ("*" is one
# path segment, "**" any number of them).
route_matches(route) if {
	method_matches(route.methods)
	some pattern in route.paths
	glob.match(pattern, ["/"], request_path)
}

method_matches(methods) if "*" in methods

method_matches(methods) if input.attributes.request.http.method in methods

request_path := concat("/", array.concat([""], input.parsed_path))
