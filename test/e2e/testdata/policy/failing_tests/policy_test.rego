package tollgate.authz_test

import data.tollgate.authz

test_admin_allowed if authz.allow with input as {"identity": {"claims": {"roles": ["admin"]}}}

# Wrong on purpose: a reader is denied, so this test fails.
test_reader_allowed if authz.allow with input as {"identity": {"claims": {"roles": ["reader"]}}}
