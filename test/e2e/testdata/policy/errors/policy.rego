# Policies that fail at evaluation time. Query: data.tollgate.authz.allow.
package tollgate.authz

default allow := false

allow if input.parsed_path == ["fast"]

# About four million iterations: seconds of work, far beyond
# policy.timeout.
allow if {
	input.parsed_path == ["slow"]
	count([y | some x in numbers.range(1, 4000); some y in numbers.range(1, 1000); x != y]) < 0
}

# Two values for one complete rule: eval_conflict_error at run time.
allow := true if input.parsed_path == ["conflict"]

allow := false if input.parsed_path == ["conflict"]
