package jwks

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

const (
	issA = "https://a.idp.test"
	issB = "https://b.idp.test"
	issC = "https://c.idp.test"
)

var hmacSecretA = []byte("0123456789abcdef0123456789abcdef-issuer-a")

// fixture is a Verifier trusting three issuers:
//   - A publishes EC P-256 "ec1", EC P-384 "ec384", EC P-521 "ec521",
//     RSA "rsa1", Ed25519 "ed1", and also has an HMAC secret;
//   - B publishes a different EC P-256 key under the same kid "ec1";
//   - C publishes RSA "rsa1" and allows RS256 only.
type fixture struct {
	v             *Verifier
	idpA, idpB, c *idp
	ec1, ec384    signer
	ec521, rsa1   signer
	ps1, ed1      signer
	hsA, ec1B     signer
	rsaC          signer
}

func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	k := keys()
	f := &fixture{
		ec1:   signer{k.ec256, "ES256", "ec1"},
		ec384: signer{k.ec384, "ES384", "ec384"},
		ec521: signer{k.ec521, "ES512", "ec521"},
		rsa1:  signer{k.rsa, "RS256", "rsa1"},
		ps1:   signer{k.rsa, "PS256", "rsa1"},
		ed1:   signer{k.ed, "EdDSA", "ed1"},
		hsA:   signer{hmacSecretA, "HS256", ""},
		ec1B:  signer{k.ec256b, "ES256", "ec1"},
		rsaC:  signer{k.rsaB, "RS256", "rsa1"},
	}
	f.idpA = newIDP(t,
		jwkJSON(t, &k.ec256.PublicKey, map[string]any{"kid": "ec1", "use": "sig"}),
		jwkJSON(t, &k.ec384.PublicKey, map[string]any{"kid": "ec384"}),
		jwkJSON(t, &k.ec521.PublicKey, map[string]any{"kid": "ec521"}),
		jwkJSON(t, &k.rsa.PublicKey, map[string]any{"kid": "rsa1"}),
		jwkJSON(t, k.ed.Public(), map[string]any{"kid": "ed1"}),
	)
	f.idpB = newIDP(t, jwkJSON(t, &k.ec256b.PublicKey, map[string]any{"kid": "ec1"}))
	f.c = newIDP(t, jwkJSON(t, &k.rsaB.PublicKey, map[string]any{"kid": "rsa1", "alg": "RS256"}))
	clk := newClock(testNow)
	f.v = newVerifier(t, Config{Issuers: []IssuerConfig{
		{
			Issuer:     issA,
			JWKSURI:    f.idpA.jwksURI(),
			Algorithms: []string{"ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "HS256"},
			HMACSecret: hmacSecretA,
			Leeway:     30 * time.Second,
		},
		{Issuer: issB, JWKSURI: f.idpB.jwksURI(), Algorithms: []string{"ES256"}},
		{Issuer: issC, JWKSURI: f.c.jwksURI(), Algorithms: []string{"RS256"}},
	}}, append([]Option{WithClock(clk.Now)}, opts...)...)
	waitReady(t, f.v)
	return f
}

func TestVerify_Rejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := keys()
	valid := f.ec1.mint(t, claims(issA), nil)
	parts := strings.Split(valid, ".")

	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsaB.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	rsaJWK := jwkJSON(t, &k.rsaB.PublicKey, map[string]any{"kid": "rsa1", "alg": "RS256"})

	tests := []struct {
		name  string
		token string
		want  reason.Code
	}{
		{"token over MaxTokenBytes → token_too_large", valid + strings.Repeat("A", DefaultMaxTokenBytes), reason.TokenTooLarge},
		{"empty string → malformed", "", reason.TokenMalformed},
		{"two segments → malformed", parts[0] + "." + parts[1], reason.TokenMalformed},
		{"four segments → malformed", valid + ".AAAA", reason.TokenMalformed},
		{"five segments (JWE) → unsupported", "eyJhbGciOiJSU0EtT0FFUCJ9.AAAA.AAAA.AAAA.AAAA", reason.TokenUnsupported},
		{"empty signature → malformed", parts[0] + "." + parts[1] + ".", reason.TokenMalformed},
		{"empty payload → malformed", parts[0] + ".." + parts[2], reason.TokenMalformed},
		{"empty header → malformed", "." + parts[1] + "." + parts[2], reason.TokenMalformed},
		{"standard base64 characters → malformed", parts[0] + "." + parts[1] + "+/." + parts[2], reason.TokenMalformed},
		{"base64 padding → malformed", parts[0] + "=." + parts[1] + "." + parts[2], reason.TokenMalformed},
		{"line break inside the signature → malformed", parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:], reason.TokenMalformed},
		{"undecodable base64 length → malformed", parts[0] + "." + parts[1] + "A." + parts[2], reason.TokenMalformed},
		{"header not JSON → malformed", f.ec1.mintRaw(t, []byte("not json"), mustJSON(t, claims(issA))), reason.TokenMalformed},
		{"header a JSON array → malformed", f.ec1.mintRaw(t, []byte(`["alg","ES256"]`), mustJSON(t, claims(issA))), reason.TokenMalformed},
		{"header without alg → malformed", f.ec1.mint(t, claims(issA), map[string]any{"alg": nil}), reason.TokenMalformed},
		{"alg with other case is not alg → malformed", f.ec1.mintRaw(t, []byte(`{"ALG":"ES256","kid":"ec1"}`), mustJSON(t, claims(issA))), reason.TokenMalformed},
		{"kid not a string → malformed", f.ec1.mint(t, claims(issA), map[string]any{"kid": 7}), reason.TokenMalformed},
		{"payload not JSON → malformed", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1"}`), []byte("{nope")), reason.TokenMalformed},
		{"payload a JSON array → malformed", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1"}`), []byte(`[1,2]`)), reason.TokenMalformed},
		{"payload null → malformed", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1"}`), []byte(`null`)), reason.TokenMalformed},
		{"payload with trailing data → malformed", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1"}`), append(mustJSON(t, claims(issA)), "{}"...)), reason.TokenMalformed},
		{"nested JWT (cty JWT) → unsupported", f.ec1.mint(t, claims(issA), map[string]any{"cty": "JWT"}), reason.TokenUnsupported},
		{"crit header → unsupported", f.ec1.mint(t, claims(issA), map[string]any{"crit": []string{"exp"}, "exp": 1}), reason.TokenUnsupported},
		{"empty crit header → unsupported", f.ec1.mint(t, claims(issA), map[string]any{"crit": []string{}}), reason.TokenUnsupported},
		{"b64 header → unsupported", f.ec1.mint(t, claims(issA), map[string]any{"b64": true}), reason.TokenUnsupported},
		{"jku header → embedded key", f.ec1.mint(t, claims(issA), map[string]any{"jku": "https://evil.test/jwks"}), reason.TokenHeaderKey},
		{"x5u header → embedded key", f.ec1.mint(t, claims(issA), map[string]any{"x5u": "https://evil.test/cert"}), reason.TokenHeaderKey},
		{"jwk header → embedded key", f.ec1.mint(t, claims(issA), map[string]any{"jwk": json.RawMessage(jwkJSON(t, &k.ec256.PublicKey, nil))}), reason.TokenHeaderKey},
		{"x5c header → embedded key", f.ec1.mint(t, claims(issA), map[string]any{"x5c": []string{"MIIB"}}), reason.TokenHeaderKey},
		{"jku header with an escaped name → embedded key", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1","j\u006bu":"https://evil.test"}`), mustJSON(t, claims(issA))), reason.TokenHeaderKey},
		{"crit header with an escaped name → unsupported", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1","cr\u0069t":["x"],"x":1}`), mustJSON(t, claims(issA))), reason.TokenUnsupported},
		{"jku header even when null → embedded key", f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1","jku":null}`), mustJSON(t, claims(issA))), reason.TokenHeaderKey},
		{"alg none with empty signature → algorithm", enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(mustJSON(t, claims(issA))) + ".", reason.TokenAlgorithm},
		{"alg None → algorithm", enc.EncodeToString([]byte(`{"alg":"None"}`)) + "." + enc.EncodeToString(mustJSON(t, claims(issA))) + ".AAAA", reason.TokenAlgorithm},
		{"unsupported alg ES256K → algorithm", f.ec1.mint(t, claims(issA), map[string]any{"alg": "ES256K"}), reason.TokenAlgorithm},
		{"alg not on the issuer's allowlist → algorithm", f.ec384.mint(t, claims(issB), nil), reason.TokenAlgorithm},
		{"HS256 at an issuer without HMAC → algorithm", signer{hmacSecretA, "HS256", ""}.mint(t, claims(issB), nil), reason.TokenAlgorithm},
		{"alg that does not fit the kid's key type → algorithm", signer{k.rsa, "RS256", "ec1"}.mint(t, claims(issA), nil), reason.TokenAlgorithm},
		{"ES384 token naming a P-256 key → algorithm", signer{k.ec384, "ES384", "ec1"}.mint(t, claims(issA), nil), reason.TokenAlgorithm},
		{"RS256 key re-used as HS256 secret (PEM) at an RS256-only issuer → algorithm", signer{rsaPEM, "HS256", "rsa1"}.mint(t, claims(issC), nil), reason.TokenAlgorithm},
		{"RS256 key re-used as HS256 secret (JWK) at an RS256-only issuer → algorithm", signer{[]byte(rsaJWK), "HS256", "rsa1"}.mint(t, claims(issC), nil), reason.TokenAlgorithm},
		{"public key PEM as HS256 secret at an issuer with its own secret → signature", signer{rsaPEM, "HS256", "rsa1"}.mint(t, claims(issA), nil), reason.TokenSignature},
		{"unknown iss → issuer", f.ec1.mint(t, claims("https://evil.test"), nil), reason.TokenIssuer},
		{"iss differing only by a trailing slash → issuer", f.ec1.mint(t, claims(issA+"/"), nil), reason.TokenIssuer},
		{"missing iss → issuer", f.ec1.mint(t, claims(issA, del("iss")), nil), reason.TokenIssuer},
		{"iss not a string → malformed", f.ec1.mint(t, claims(issA, set("iss", 1)), nil), reason.TokenMalformed},
		{"unknown kid → unknown key", f.ec1.withKid("nope").mint(t, claims(issA), nil), reason.TokenUnknownKey},
		{"tampered payload → signature", parts[0] + "." + enc.EncodeToString(mustJSON(t, claims(issA, set("sub", "mallory")))) + "." + parts[2], reason.TokenSignature},
		{"other key under a known kid → signature", signer{k.ec256b, "ES256", "ec1"}.mint(t, claims(issA), nil), reason.TokenSignature},
		{"issuer A's key presenting as issuer B with the same kid → signature", f.ec1.mint(t, claims(issB), nil), reason.TokenSignature},
		{"issuer B's key presenting as issuer A with the same kid → signature", f.ec1B.mint(t, claims(issA), nil), reason.TokenSignature},
		{"kid-less token signed by an unknown key → signature", signer{k.ec256b, "ES256", ""}.mint(t, claims(issA), nil), reason.TokenSignature},
		{"truncated signature → signature", parts[0] + "." + parts[1] + "." + parts[2][:20], reason.TokenSignature},
		{"missing exp → missing exp", f.ec1.mint(t, claims(issA, del("exp")), nil), reason.TokenMissingExpiry},
		{"exp beyond leeway in the past → expired", f.ec1.mint(t, claims(issA, set("exp", testNow.Unix()-31)), nil), reason.TokenExpired},
		{"exp exactly now minus leeway → expired", f.ec1.mint(t, claims(issA, set("exp", testNow.Unix()-30)), nil), reason.TokenExpired},
		{"exp as a string → malformed", f.ec1.mint(t, claims(issA, set("exp", "1900000000")), nil), reason.TokenMalformed},
		{"nbf beyond leeway in the future → not yet valid", f.ec1.mint(t, claims(issA, set("nbf", testNow.Unix()+31)), nil), reason.TokenNotYetValid},
		{"iat beyond leeway in the future → iat in future", f.ec1.mint(t, claims(issA, set("iat", testNow.Unix()+31)), nil), reason.TokenIssuedInFuture},
		{"fractional iat beyond leeway → iat in future", f.ec1.mint(t, claims(issA, set("iat", float64(testNow.Unix())+30.5)), nil), reason.TokenIssuedInFuture},
		{"sub not a string → malformed", f.ec1.mint(t, claims(issA, set("sub", 42)), nil), reason.TokenMalformed},
		{"aud a number → malformed", f.ec1.mint(t, claims(issA, set("aud", 42)), nil), reason.TokenMalformed},
		{"aud array with a number → malformed", f.ec1.mint(t, claims(issA, set("aud", []any{"api", 1})), nil), reason.TokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := f.v.Verify(t.Context(), tt.token)
			if got := code(t, err); got != tt.want || tok != nil {
				t.Errorf("Verify(%s) = %v, %v; want nil, %s", short(tt.token), tok, err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), tt.token) && tt.token != "" {
				t.Errorf("Verify(%s) error %q echoes the token", short(tt.token), err)
			}
		})
	}
}

func TestVerify_Accepts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name     string
		token    string
		wantIss  string
		wantAlg  string
		wantKid  string
		wantAud  []string
		wantExp  time.Time
		checkNbf bool
	}{
		{name: "ES256 with kid", token: f.ec1.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}},
		{name: "ES384", token: f.ec384.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "ES384", wantKid: "ec384", wantAud: []string{"api"}},
		{name: "ES512", token: f.ec521.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "ES512", wantKid: "ec521", wantAud: []string{"api"}},
		{name: "RS256", token: f.rsa1.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "RS256", wantKid: "rsa1", wantAud: []string{"api"}},
		{name: "PS256", token: f.ps1.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "PS256", wantKid: "rsa1", wantAud: []string{"api"}},
		{name: "EdDSA", token: f.ed1.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "EdDSA", wantKid: "ed1", wantAud: []string{"api"}},
		{name: "HS256 with the issuer's secret", token: f.hsA.mint(t, claims(issA), nil), wantIss: issA, wantAlg: "HS256", wantAud: []string{"api"}},
		{name: "ES256 without kid tries the issuer's ES256 keys", token: f.ec1.withKid("").mint(t, claims(issA), nil), wantIss: issA, wantAlg: "ES256", wantAud: []string{"api"}},
		{name: "same kid at another issuer picks that issuer's key", token: f.ec1B.mint(t, claims(issB), nil), wantIss: issB, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}},
		{name: "RS256 key with alg member", token: f.rsaC.mint(t, claims(issC), nil), wantIss: issC, wantAlg: "RS256", wantKid: "rsa1", wantAud: []string{"api"}},
		{name: "aud array is kept as a slice", token: f.ec1.mint(t, claims(issA, set("aud", []string{"x", "y"})), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"x", "y"}},
		{name: "no aud gives an empty audience", token: f.ec1.mint(t, claims(issA, del("aud")), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1"},
		{name: "exp within leeway", token: f.ec1.mint(t, claims(issA, set("exp", testNow.Unix()-29)), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}, wantExp: testNow.Add(-29 * time.Second)},
		{name: "fractional exp", token: f.ec1.mint(t, claims(issA, set("exp", float64(testNow.Unix())+60.5)), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}, wantExp: testNow.Add(60*time.Second + 500*time.Millisecond)},
		{name: "exponent-notation exp", token: f.ec1.mintRaw(t, []byte(`{"alg":"ES256","kid":"ec1"}`), []byte(`{"iss":"`+issA+`","exp":1.9e9}`)), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantExp: time.Unix(1_900_000_000, 0)},
		{name: "nbf within leeway", token: f.ec1.mint(t, claims(issA, set("nbf", testNow.Unix()+29)), nil), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}, checkNbf: true},
		{name: "unknown cty and typ are ignored", token: f.ec1.mint(t, claims(issA), map[string]any{"cty": "json", "typ": "at+jwt"}), wantIss: issA, wantAlg: "ES256", wantKid: "ec1", wantAud: []string{"api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := f.v.Verify(t.Context(), tt.token)
			if err != nil {
				t.Fatalf("Verify(%s) = %v; want a token", short(tt.token), err)
			}
			if tok.Issuer != tt.wantIss || tok.Algorithm != tt.wantAlg || tok.KeyID != tt.wantKid {
				t.Errorf("Verify(%s) = iss %q alg %q kid %q; want %q %q %q", short(tt.token), tok.Issuer, tok.Algorithm, tok.KeyID, tt.wantIss, tt.wantAlg, tt.wantKid)
			}
			if strings.Join(tok.Audience, ",") != strings.Join(tt.wantAud, ",") {
				t.Errorf("Verify(%s).Audience = %q; want %q", short(tt.token), tok.Audience, tt.wantAud)
			}
			if !tt.wantExp.IsZero() && !tok.Expiry.Equal(tt.wantExp) {
				t.Errorf("Verify(%s).Expiry = %v; want %v", short(tt.token), tok.Expiry, tt.wantExp)
			}
			if tt.checkNbf && tok.NotBefore.IsZero() {
				t.Errorf("Verify(%s).NotBefore is zero; want set", short(tt.token))
			}
			if _, ok := tok.Claims["exp"].(json.Number); !ok {
				t.Errorf("Verify(%s).Claims[exp] = %T; want json.Number", short(tt.token), tok.Claims["exp"])
			}
		})
	}
}

func TestVerify_TokenFields(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	raw := f.ec1.mint(t, claims(issA, set("nbf", testNow.Unix()-5), set("scope", "read write"), set("n", 12345678901234567)), nil)
	tok, err := f.v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify(token) = %v; want a token", err)
	}
	want := Token{
		Issuer: issA, Subject: "alice", Audience: []string{"api"},
		Expiry: testNow.Add(time.Hour), NotBefore: testNow.Add(-5 * time.Second), IssuedAt: testNow.Add(-10 * time.Second),
		KeyID: "ec1", Algorithm: "ES256",
	}
	if tok.Issuer != want.Issuer || tok.Subject != want.Subject || !tok.Expiry.Equal(want.Expiry) ||
		!tok.NotBefore.Equal(want.NotBefore) || !tok.IssuedAt.Equal(want.IssuedAt) || tok.KeyID != want.KeyID || tok.Algorithm != want.Algorithm {
		t.Errorf("Verify(token) = %+v; want %+v", *tok, want)
	}
	if got := tok.Claims["n"]; got != json.Number("12345678901234567") {
		t.Errorf("Verify(token).Claims[n] = %#v; want json.Number(12345678901234567)", got)
	}
	if got := tok.Claims["scope"]; got != "read write" {
		t.Errorf("Verify(token).Claims[scope] = %#v; want %q", got, "read write")
	}
}

// A token minted by jwx's own JWT builder must verify: the hand-rolled
// header and claims handling agrees with the library's encoding.
func TestVerify_AcceptsTokenMintedByJWX(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	priv, err := jwk.Import(keys().ec256)
	if err != nil {
		t.Fatal(err)
	}
	if err := priv.Set(jwk.KeyIDKey, "ec1"); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewBuilder().Issuer(issA).Subject("bob").Audience([]string{"api", "web"}).
		Expiration(testNow.Add(time.Minute)).IssuedAt(testNow).Build()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), priv))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.v.Verify(t.Context(), string(raw))
	if err != nil {
		t.Fatalf("Verify(jwx token) = %v; want a token", err)
	}
	if got.Subject != "bob" || !got.HasAudience([]string{"web"}) || got.KeyID != "ec1" {
		t.Errorf("Verify(jwx token) = %+v; want sub bob, aud web, kid ec1", *got)
	}
}

func TestToken_HasAudience(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		aud      []string
		accepted []string
		want     bool
	}{
		{"one of several audiences accepted → true", []string{"a", "b"}, []string{"x", "b"}, true},
		{"no overlap → false", []string{"a"}, []string{"b"}, false},
		{"no audience → false", nil, []string{"a"}, false},
		{"nothing accepted → false", []string{"a"}, nil, false},
		{"comparison is exact → false", []string{"API"}, []string{"api"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := &Token{Audience: tt.aud}
			if got := tok.HasAudience(tt.accepted); got != tt.want {
				t.Errorf("HasAudience(%q) with aud %q = %v; want %v", tt.accepted, tt.aud, got, tt.want)
			}
		})
	}
}

func TestNumericDate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"integer seconds", "1800000000", time.Unix(1_800_000_000, 0)},
		{"fractional seconds", "1800000000.25", time.Unix(1_800_000_000, 250_000_000)},
		{"exponent notation", "1.8e9", time.Unix(1_800_000_000, 0)},
		{"negative", "-1", time.Unix(-1, 0)},
		{"beyond int64 clamps to year 9999", "99999999999999999999999", time.Unix(maxNumericDate, 0)},
		{"huge float clamps to year 9999", "1e300", time.Unix(maxNumericDate, 0)},
		{"huge negative clamps", "-1e300", time.Unix(-maxNumericDate, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := numericDate(json.Number(tt.in))
			if err != nil || !got.Equal(tt.want) {
				t.Errorf("numericDate(%s) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// A token valid far into the future must not overflow the cache's
// nanosecond expiry.
func TestVerify_FarFutureExpiryIsCached(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	raw := f.ec1.mint(t, claims(issA, set("exp", 1e15)), nil)
	for i := range 2 {
		if _, err := f.v.Verify(t.Context(), raw); err != nil {
			t.Fatalf("Verify(far-future token) #%d = %v; want a token", i, err)
		}
	}
}

func TestVerify_ErrorsMatchReasonSentinels(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := f.v.Verify(t.Context(), f.ec1.mint(t, claims(issA, del("exp")), nil))
	if !errors.Is(err, reason.New(reason.TokenMissingExpiry)) {
		t.Errorf("Verify(no exp) = %v; want errors.Is token_missing_exp", err)
	}
	if got := reason.Of(err); got != reason.TokenMissingExpiry {
		t.Errorf("reason.Of(Verify(no exp)) = %s; want %s", got, reason.TokenMissingExpiry)
	}
}

func TestVerify_ContextEndsWhileWaitingForRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := f.v.Verify(ctx, f.ec1.withKid("rotated").mint(t, claims(issA), nil))
	if code(t, err) != reason.TokenUnknownKey || !errors.Is(err, context.Canceled) {
		t.Errorf("Verify(unknown kid, cancelled ctx) = %v; want token_unknown_key wrapping context.Canceled", err)
	}
}
