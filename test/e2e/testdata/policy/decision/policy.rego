# Every field of the OPA-Envoy decision object Tollgate maps onto the
# CheckResponse, one path each. Query: data.tollgate.authz.allow.
package tollgate.authz

# Denied without http_status: Tollgate's own 403 policy_denied.
default allow := {"allowed": false}

# Allowed, with headers for the upstream (including a forged identity
# header that Tollgate must override), removals, response headers, query
# rewrites and dynamic metadata.
allow := {
	"allowed": true,
	"headers": {
		"x-policy": "granted",
		"x-policy-subject": input.identity.subject,
		"x-user-id": "policy-forged",
	},
	"request_headers_to_remove": ["x-debug", "x-user-id"],
	"response_headers_to_add": {"x-policy-response": "added"},
	"query_parameters_to_set": {"tenant": "acme"},
	"query_parameters_to_remove": ["debug"],
	"dynamic_metadata": {"policy_version": "v7", "subject": input.identity.subject, "weight": 3},
} if input.parsed_path == ["allow"]

# The same forgery, spelt as a client would: header names are
# case-insensitive, and Envoy removes headers after setting them.
allow := {
	"allowed": true,
	"headers": {"X-User-Id": "policy-forged"},
	"request_headers_to_remove": ["X-User-Id"],
} if input.parsed_path == ["allow-mixed-case"]

# Denied with a status, client headers and a body of the policy's own.
allow := {
	"allowed": false,
	"http_status": 429,
	"headers": {"retry-after": "7", "content-type": "text/plain"},
	"response_headers_to_add": {"x-ratelimit-policy": "orders"},
	"body": "slow down",
} if input.parsed_path == ["ratelimit"]

# Denied with a status only: Tollgate's JSON body.
allow := {"allowed": false, "http_status": 401} if input.parsed_path == ["login"]
