# Tollgate's development-mode policy, written by `tollgate serve` on its
# first start without --config. Edit it: Tollgate reloads it on save and
# keeps the previous version serving if the new one does not compile.
# `bin/tollgate policy test .tollgate/policy` runs policy_test.rego.
package tollgate.authz

default allow := false

# Reading is open to every authenticated caller.
allow if {
	input.identity.type != "anonymous"
	input.attributes.request.http.method in {"GET", "HEAD", "OPTIONS"}
}

# Writing needs the admin or writer role.
allow if {
	input.identity.type != "anonymous"
	some role in roles
	role in {"admin", "writer"}
}

# roles is the token's or the session's roles claim: a list, or a
# space-separated string.
roles := input.identity.claims.roles if is_array(input.identity.claims.roles)

roles := split(input.identity.claims.roles, " ") if is_string(input.identity.claims.roles)
