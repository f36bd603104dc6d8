package tollgate.authz

default allow := false

allow if input.identity.claims.roles[_] == "admin"
