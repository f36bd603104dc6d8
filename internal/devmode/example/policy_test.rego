package tollgate.authz_test

import data.tollgate.authz

req(method, roles) := {
	"attributes": {"request": {"http": {"method": method, "path": "/"}}},
	"identity": {"type": "jwt", "subject": "alice", "claims": {"roles": roles}},
}

test_anyone_reads if authz.allow with input as req("GET", [])

test_reader_cannot_write if not authz.allow with input as req("POST", ["reader"])

test_writer_writes if authz.allow with input as req("POST", ["writer"])

test_admin_as_string_writes if authz.allow with input as req("DELETE", "openid admin")

test_anonymous_denied if not authz.allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}, "identity": {"type": "anonymous"}}
