package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// signingKey is an IdP key pair: the private half signs test tokens, the
// public JWK (with kid, alg and use) is what the IdP publishes.
type signingKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer // *ecdsa.PrivateKey or *rsa.PrivateKey
	pub  jwk.Key
}

func newES256Key(t *testing.T, kid string) *signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("ecdsa.GenerateKey: %v", err)
	}
	return newSigningKey(t, kid, jwa.ES256(), k)
}

func newRS256Key(t *testing.T, kid string) *signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("rsa.GenerateKey: %v", err)
	}
	return newSigningKey(t, kid, jwa.RS256(), k)
}

func newSigningKey(t *testing.T, kid string, alg jwa.SignatureAlgorithm, priv crypto.Signer) *signingKey {
	t.Helper()
	pub, err := jwk.Import(priv.Public())
	if err != nil {
		t.Fatalf("jwk.Import: %v", err)
	}
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := pub.Set(k, v); err != nil {
			t.Fatalf("jwk Set(%s): %v", k, err)
		}
	}
	return &signingKey{kid: kid, alg: alg, priv: priv, pub: pub}
}

// publicPEM is the PKIX PEM of the public key, as an IdP might publish it.
func (k *signingKey) publicPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		t.Fatalf("MarshalPKIXPublicKey: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// publicJWK is the public JWK exactly as the IdP serves it.
func (k *signingKey) publicJWK(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(k.pub)
	if err != nil {
		t.Fatalf("json.Marshal(jwk): %v", err)
	}
	return b
}

// idp is a real JWKS HTTP server on loopback whose key set can be replaced
// while it runs. It counts the requests it receives.
type idp struct {
	srv    *httptest.Server
	maxAge int // Cache-Control max-age of the key set, in seconds

	mu   sync.Mutex
	keys []*signingKey
	hits atomic.Int64
}

func newIDP(t *testing.T, maxAge int, keys ...*signingKey) *idp {
	t.Helper()
	p := &idp{maxAge: maxAge, keys: keys}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) serve(w http.ResponseWriter, r *http.Request) {
	p.hits.Add(1)
	if r.URL.Path != "/jwks.json" {
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	set := struct {
		Keys []jwk.Key `json:"keys"`
	}{Keys: []jwk.Key{}}
	for _, k := range p.keys {
		set.Keys = append(set.Keys, k.pub)
	}
	b, err := json.Marshal(set)
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", p.maxAge))
	_, _ = w.Write(b)
}

// issuer is the iss of this IdP's tokens.
func (p *idp) issuer() string { return p.srv.URL }

func (p *idp) jwksURI() string { return p.srv.URL + "/jwks.json" }

// publish replaces the served key set.
func (p *idp) publish(keys ...*signingKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

// issuerConfig is the issuers entry of the contract for this IdP.
func (p *idp) issuerConfig() string {
	return fmt.Sprintf(`  - issuer: %q
    jwks_uri: %q
    algorithms: ["ES256", "RS256"]
    leeway: "5s"
    refresh_min: "1s"
    refresh_max: "1m"
    unknown_key_refresh_interval: "1s"
`, p.issuer(), p.jwksURI())
}

// ordersConfig is the rest of the contract config after the server
// section: one issuer, the orders service, claim headers and token limits.
func ordersConfig(p *idp) string {
	return `log: {level: "debug", format: "json"}
issuers:
` + p.issuerConfig() + `services:
  - name: "orders"
    hosts: ["orders.example.com"]
    path_prefixes: ["/"]
    audiences: ["orders-api"]
    auth: "required"
headers:
  claims_to_headers: {sub: "x-user-id", roles: "x-user-roles"}
  remove: ["authorization"]
tokens: {max_bytes: 16384}
`
}

// claims is a JWT claims set.
type claims map[string]any

var jtiSeq atomic.Int64

// validClaims are claims the orders service accepts from iss: a fresh jti
// keeps every token distinct, so no test is answered from a token cache.
func validClaims(iss string) claims {
	now := time.Now()
	return claims{
		"iss":   iss,
		"sub":   "alice",
		"aud":   "orders-api",
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"jti":   fmt.Sprintf("jti-%d-%d", now.UnixNano(), jtiSeq.Add(1)),
		"roles": []string{"reader", "writer"},
	}
}

// with returns a copy of c with set applied; a nil value deletes a claim.
func (c claims) with(set claims) claims {
	out := make(claims, len(c)+len(set))
	for k, v := range c {
		out[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// sign signs c with k as a compact JWS. The protected header holds typ JWT,
// k's kid and alg, then hdr (which may override kid or add jku, jwk, x5u).
func sign(t *testing.T, k *signingKey, c claims, hdr map[string]any) string {
	t.Helper()
	return signWith(t, k.alg, k.priv, k.kid, c, hdr)
}

// signWith signs c with any algorithm and key jwx accepts, raw key types
// only, so that jwx adds nothing to the header on its own.
func signWith(t *testing.T, alg jwa.SignatureAlgorithm, key any, kid string, c claims, hdr map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json.Marshal(claims): %v", err)
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "JWT"); err != nil {
		t.Fatalf("header typ: %v", err)
	}
	if kid != "" {
		if err := h.Set(jws.KeyIDKey, kid); err != nil {
			t.Fatalf("header kid: %v", err)
		}
	}
	for name, v := range hdr {
		if err := h.Set(name, v); err != nil {
			t.Fatalf("header %s: %v", name, err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatalf("jws.Sign(%s): %v", alg, err)
	}
	return string(tok)
}

var b64 = base64.RawURLEncoding

// compact joins hand-made header and payload JSON with a raw signature
// segment, for tokens no signing library would produce.
func compact(t *testing.T, header map[string]any, c claims, sig string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatalf("json.Marshal(header): %v", err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json.Marshal(claims): %v", err)
	}
	return b64.EncodeToString(h) + "." + b64.EncodeToString(p) + "." + sig
}

// segments splits a compact JWS into its three parts.
func segments(t *testing.T, tok string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments; want 3", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// goldenRequest is testdata/check_request.json: the CheckRequest Envoy
// sends for GET https://orders.example.com/v1/orders/42.
var goldenRequest = sync.OnceValues(func() (*authv3.CheckRequest, error) {
	b, err := os.ReadFile("testdata/check_request.json")
	if err != nil {
		return nil, err
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("testdata/check_request.json: %w", err)
	}
	return req, nil
})

// checkRequest returns the golden request for host with request ID id,
// extra client headers and, unless token is "", an Authorization header
// "Bearer <token>".
func checkRequest(t *testing.T, host, id, token string, extra map[string]string) *authv3.CheckRequest {
	t.Helper()
	golden, err := goldenRequest()
	if err != nil {
		t.Fatalf("golden CheckRequest: %v", err)
	}
	req := proto.Clone(golden).(*authv3.CheckRequest)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Id, h.Host = id, host
	h.Headers[":authority"] = host
	h.Headers["x-request-id"] = id
	for k, v := range extra {
		h.Headers[k] = v
	}
	if token != "" {
		h.Headers["authorization"] = "Bearer " + token
	}
	return req
}

// headerValue finds key among header options.
func headerValue(hs []*corev3.HeaderValueOption, key string) (*corev3.HeaderValueOption, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), key) {
			return h, true
		}
	}
	return nil, false
}
