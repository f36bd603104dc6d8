package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// The minted tokens must verify against the JWKS the issuer serves, with
// exactly the claims the Tollgate config expects; otherwise every Tollgate
// row would measure the deny path.
func TestIssuerTokensVerifyAgainstServedJWKS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	is, err := startIssuer(ctx)
	if err != nil {
		t.Fatalf("startIssuer() error = %v", err)
	}
	t.Cleanup(func() { _ = is.Close(t.Context()) })

	hc := &http.Client{Timeout: 5 * time.Second}
	set, err := jwk.Fetch(ctx, is.JWKSURL, jwk.WithHTTPClient(hc))
	if err != nil {
		t.Fatalf("jwk.Fetch(%s) error = %v", is.JWKSURL, err)
	}
	if set.Len() != 1 {
		t.Fatalf("JWKS has %d keys; want 1", set.Len())
	}
	pub, _ := set.Key(0)
	if _, ok := pub.(jwk.ECDSAPublicKey); !ok {
		t.Errorf("JWKS key is %T; want a public EC key (never the private half)", pub)
	}

	tokens, err := is.mintN(ctx, 5)
	if err != nil {
		t.Fatalf("mintN(5) error = %v", err)
	}
	for i, raw := range tokens {
		tok, err := jwt.ParseString(raw, jwt.WithKeySet(set), jwt.WithIssuer(is.URL), jwt.WithAudience(benchAudience), jwt.WithValidate(true))
		if err != nil {
			t.Fatalf("jwt.Parse(token %d) error = %v", i, err)
		}
		if sub, _ := tok.Subject(); sub != "user-"+string(rune('0'+i)) {
			t.Errorf("token %d sub = %q; want user-%d", i, sub, i)
		}
		var roles []any
		if err := tok.Get("roles", &roles); err != nil || len(roles) == 0 {
			t.Errorf("token %d roles = %v, %v; want a non-empty array", i, roles, err)
		}
		exp, _ := tok.Expiration()
		if d := time.Until(exp); d < 55*time.Minute || d > 61*time.Minute {
			t.Errorf("token %d exp in %v; want ≈1h", i, d)
		}
		msg, err := jws.ParseString(raw)
		if err != nil {
			t.Fatalf("jws.Parse(token %d) error = %v", i, err)
		}
		kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
		wantKID, _ := pub.KeyID()
		if kid == "" || kid != wantKID {
			t.Errorf("token %d kid = %q; want the JWKS kid %q", i, kid, wantKID)
		}
	}
}
