package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"google.golang.org/grpc/codes"
)

const ordersHost = "orders.example.com"

// invalidToken is the RFC 6750 challenge of a 401 for a bad token.
func invalidToken(description string) string {
	return `Bearer realm="tollgate", error="invalid_token", error_description="` + description + `"`
}

// checkCase is one request to the orders service and the outcome the
// contract promises for it.
type checkCase struct {
	name  string
	host  string                    // default ordersHost
	token func(t *testing.T) string // nil: no Authorization header
	// headers are sent by the client in addition to the golden ones.
	headers map[string]string

	wantCode   codes.Code // CheckResponse.status.code
	wantReason string     // CheckResponse.status.message when denied

	// Allowed: headers set with OVERWRITE_IF_EXISTS_OR_ADD, headers removed.
	wantSet    map[string]string
	wantRemove []string
	wantAbsent []string // headers that must not be set

	// Denied.
	wantHTTP      int
	wantChallenge string // www-authenticate must contain it ("" = not checked)
	wantError     string // body "error"
}

// sentTokens records every token a test sent, to grep the logs for them.
type sentTokens struct {
	mu   sync.Mutex
	toks []string
}

func (s *sentTokens) add(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.toks = append(s.toks, tok)
}

func (s *sentTokens) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.toks)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	es := newES256Key(t, "es-1")
	rs := newRS256Key(t, "rs-1")
	idp := newIDP(t, 300, es, rs)
	attackerKey := newES256Key(t, "attacker-1")
	attacker := newIDP(t, 300, attackerKey)
	tg := startTollgate(t, ordersConfig(idp))
	iss := idp.issuer()

	esToken := func(set claims) func(t *testing.T) string {
		return func(t *testing.T) string { return sign(t, es, validClaims(iss).with(set), nil) }
	}
	now := time.Now()
	tests := []checkCase{
		{
			name:       "valid ES256 token → allowed with identity headers",
			token:      esToken(nil),
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "alice", "x-user-roles": "reader,writer"},
			wantRemove: []string{"authorization"},
		},
		{
			name:       "valid RS256 token → allowed with identity headers",
			token:      func(t *testing.T) string { return sign(t, rs, validClaims(iss).with(claims{"sub": "bob"}), nil) },
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "bob", "x-user-roles": "reader,writer"},
			wantRemove: []string{"authorization"},
		},
		{
			name:       "aud array containing the service audience → allowed",
			token:      esToken(claims{"aud": []string{"billing-api", "orders-api"}}),
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "alice"},
			wantRemove: []string{"authorization"},
		},
		{
			name: "exp 2s ago, within the 5s leeway → allowed",
			// Minted when sent: a "now" taken earlier drifts on a busy machine.
			token: func(t *testing.T) string {
				return esToken(claims{"exp": time.Now().Add(-2 * time.Second).Unix()})(t)
			},
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "alice"},
			wantRemove: []string{"authorization"},
		},
		{
			name:       "client-sent x-user-id and x-user-roles → overwritten by the token's claims",
			token:      esToken(nil),
			headers:    map[string]string{"x-user-id": "spoofed", "x-user-roles": "admin"},
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "alice", "x-user-roles": "reader,writer"},
			wantRemove: []string{"authorization"},
		},
		{
			name:       "token without roles and client-sent x-user-roles → header removed, not passed through",
			token:      esToken(claims{"roles": nil}),
			headers:    map[string]string{"x-user-roles": "admin"},
			wantCode:   codes.OK,
			wantSet:    map[string]string{"x-user-id": "alice"},
			wantRemove: []string{"authorization", "x-user-roles"},
			wantAbsent: []string{"x-user-roles"},
		},
		{
			name:          "no Authorization header → 401 with bare Bearer challenge",
			wantCode:      codes.Unauthenticated,
			wantReason:    "credential_missing",
			wantHTTP:      401,
			wantChallenge: `Bearer realm="tollgate"`,
			wantError:     "credential missing",
		},
		{
			name:       "host matching no service → 403",
			host:       "unknown.example.com",
			token:      esToken(nil),
			wantCode:   codes.PermissionDenied,
			wantReason: "no_matching_service",
			wantHTTP:   403,
			wantError:  "no service matches the request",
		},
		deny("expired token → 401 with WWW-Authenticate", esToken(claims{"exp": now.Add(-time.Minute).Unix()}),
			"token_expired", "token expired"),
		deny("token without exp → 401", esToken(claims{"exp": nil}),
			"token_missing_exp", "token has no expiry"),
		deny("nbf a minute ahead, beyond leeway → 401 not yet valid", esToken(claims{"nbf": now.Add(time.Minute).Unix()}),
			"token_not_yet_valid", "token not yet valid"),
		deny("iat a minute ahead, beyond leeway → 401 issued in the future", esToken(claims{"iat": now.Add(time.Minute).Unix(), "nbf": nil}),
			"token_iat_in_future", "token issued in the future"),
		deny("aud of another service → 401 audience not accepted", esToken(claims{"aud": "billing-api"}),
			"token_audience_mismatch", "token audience not accepted"),
		deny("no aud → 401 no audience", esToken(claims{"aud": nil}),
			"token_audience_missing", "token has no audience"),
		deny("well-signed token of an unconfigured issuer → 401 issuer not trusted", esToken(claims{"iss": "http://127.0.0.1:1"}),
			"token_issuer_unknown", "token issuer not trusted"),
		deny("alg none with empty signature → 401", func(t *testing.T) string {
			return compact(t, map[string]any{"alg": "none", "typ": "JWT", "kid": es.kid}, validClaims(iss), "")
		}, "token_algorithm_not_allowed", "token algorithm not allowed"),
		deny("alg NONE in upper case → 401", func(t *testing.T) string {
			return compact(t, map[string]any{"alg": "NONE", "typ": "JWT"}, validClaims(iss), "")
		}, "token_algorithm_not_allowed", "token algorithm not allowed"),
		deny("HS256 keyed with the RSA public key PEM → 401", func(t *testing.T) string {
			return signWith(t, jwa.HS256(), rs.publicPEM(t), rs.kid, validClaims(iss), nil)
		}, "token_algorithm_not_allowed", "token algorithm not allowed"),
		deny("HS256 keyed with the RSA public JWK bytes → 401", func(t *testing.T) string {
			return signWith(t, jwa.HS256(), rs.publicJWK(t), rs.kid, validClaims(iss), nil)
		}, "token_algorithm_not_allowed", "token algorithm not allowed"),
		deny("payload changed after signing → 401 signature invalid", func(t *testing.T) string {
			h, _, sig := segments(t, sign(t, es, validClaims(iss), nil))
			forged, err := json.Marshal(validClaims(iss).with(claims{"sub": "admin", "roles": []string{"admin"}}))
			if err != nil {
				t.Fatal(err)
			}
			return h + "." + b64.EncodeToString(forged) + "." + sig
		}, "token_signature_invalid", "token signature invalid"),
		deny("signature truncated → 401 signature invalid", func(t *testing.T) string {
			h, p, sig := segments(t, sign(t, es, validClaims(iss), nil))
			return h + "." + p + "." + sig[:40] // 30 of 64 bytes, still valid base64url
		}, "token_signature_invalid", "token signature invalid"),
		deny("header segment not base64url → 401 malformed", func(t *testing.T) string {
			_, p, sig := segments(t, sign(t, es, validClaims(iss), nil))
			return "eyJhbGciOiJFUzI1NiJ9!*%." + p + "." + sig
		}, "token_malformed", "token malformed"),
		deny("two segments only → 401 malformed", func(t *testing.T) string {
			h, p, _ := segments(t, sign(t, es, validClaims(iss), nil))
			return h + "." + p
		}, "token_malformed", "token malformed"),
		deny("token over 16 KiB → 401 token too large", esToken(claims{"pad": strings.Repeat("x", 17<<10)}),
			"token_too_large", "token too large"),
		deny("crit header naming an unknown extension → 401 not supported", func(t *testing.T) string {
			return sign(t, es, validClaims(iss), map[string]any{"crit": []string{"urn:example:must-understand"}, "urn:example:must-understand": true})
		}, "token_unsupported", "token type not supported"),
		deny("jku header pointing at an attacker JWKS → 401 embedded key", func(t *testing.T) string {
			return sign(t, attackerKey, validClaims(iss), map[string]any{"jku": attacker.jwksURI()})
		}, "token_embedded_key", "token carries an embedded key reference"),
		deny("jku header with a trusted kid → 401 embedded key", func(t *testing.T) string {
			return signWith(t, jwa.ES256(), attackerKey.priv, es.kid, validClaims(iss), map[string]any{"jku": attacker.jwksURI()})
		}, "token_embedded_key", "token carries an embedded key reference"),
		deny("jwk header embedding the attacker key → 401 embedded key", func(t *testing.T) string {
			return sign(t, attackerKey, validClaims(iss), map[string]any{"jwk": attackerKey.pub})
		}, "token_embedded_key", "token carries an embedded key reference"),
		deny("x5u header pointing at the attacker → 401 embedded key", func(t *testing.T) string {
			return sign(t, attackerKey, validClaims(iss), map[string]any{"x5u": attacker.srv.URL + "/cert.pem"})
		}, "token_embedded_key", "token carries an embedded key reference"),
	}

	var sent sentTokens
	t.Run("cases", func(t *testing.T) {
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				var token string
				if tc.token != nil {
					token = tc.token(t)
					sent.add(token)
				}
				host := tc.host
				if host == "" {
					host = ordersHost
				}
				id := fmt.Sprintf("e2e-check-%02d", i)
				resp := tg.check(t, checkRequest(t, host, id, token, tc.headers))
				if tc.wantCode == codes.OK {
					assertAllowed(t, resp, tc)
					return
				}
				assertDenied(t, resp, tc, id, token)
			})
		}
	})

	t.Run("attacker key servers receive no request", func(t *testing.T) {
		if n := attacker.hits.Load(); n != 0 {
			t.Errorf("attacker JWKS server requests = %d; want 0", n)
		}
	})

	t.Run("logs never contain a raw token", func(t *testing.T) {
		assertNoTokenInLogs(t, tg.stderr.String(), sent.all())
		// Guard against a vacuous pass: every denial is logged, by
		// request id.
		logs := tg.stderr.String()
		for i, tc := range tests {
			if id := fmt.Sprintf("e2e-check-%02d", i); tc.wantCode != codes.OK && !strings.Contains(logs, `"`+id+`"`) {
				t.Errorf("logs mention request_id %q = false; want a deny log line for %q", id, tc.name)
			}
		}
	})

	t.Run("metrics count every check by result and reason", func(t *testing.T) {
		want := map[[2]string]float64{}
		for _, tc := range tests {
			if tc.wantCode == codes.OK {
				want[[2]string{"allowed", "ok"}]++
			} else {
				want[[2]string{"denied", tc.wantReason}]++
			}
		}
		status, body := tg.get(t, "/metrics")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics status = %d; want 200", status)
		}
		got := checksTotal(t, body)
		for k, n := range want {
			if got[k] != n {
				t.Errorf(`tollgate_checks_total{result=%q,reason=%q} = %v; want %v`, k[0], k[1], got[k], n)
			}
		}
		for k, n := range got {
			if _, ok := want[k]; !ok {
				t.Errorf(`tollgate_checks_total{result=%q,reason=%q} = %v; want no such series`, k[0], k[1], n)
			}
		}
	})

	t.Run("healthz and readyz report a ready server", func(t *testing.T) {
		if status, body := tg.get(t, "/healthz"); status != http.StatusOK {
			t.Errorf("GET /healthz = %d %q; want 200", status, body)
		}
		status, body := tg.get(t, "/readyz")
		var got struct {
			Ready          bool     `json:"ready"`
			MissingIssuers []string `json:"missing_issuers"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusOK || !got.Ready || got.MissingIssuers == nil || len(got.MissingIssuers) != 0 {
			t.Errorf(`GET /readyz = %d %s; want 200 {"ready":true,"missing_issuers":[]}`, status, body)
		}
	})
}

// deny is a case whose token the contract refuses with 401 invalid_token.
func deny(name string, token func(t *testing.T) string, reason, description string) checkCase {
	return checkCase{
		name:          name,
		token:         token,
		wantCode:      codes.Unauthenticated,
		wantReason:    reason,
		wantHTTP:      401,
		wantChallenge: invalidToken(description),
		wantError:     description,
	}
}

func assertAllowed(t *testing.T, resp *authv3.CheckResponse, tc checkCase) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.OK {
		t.Fatalf("Check status = %v (%q); want OK", got, resp.GetStatus().GetMessage())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("Check OkResponse = nil (denied: %v); want an OkResponse", resp.GetDeniedResponse())
	}
	for key, want := range tc.wantSet {
		h, found := headerValue(ok.GetHeaders(), key)
		if !found {
			t.Errorf("Check OkResponse header %q missing; want %q (headers: %v)", key, want, ok.GetHeaders())
			continue
		}
		if got := h.GetHeader().GetValue(); got != want {
			t.Errorf("Check OkResponse header %q = %q; want %q", key, got, want)
		}
		if got := h.GetAppendAction(); got != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("Check OkResponse header %q append_action = %v; want OVERWRITE_IF_EXISTS_OR_ADD", key, got)
		}
		if usesDeprecatedAppend(h) {
			t.Errorf("Check OkResponse header %q sets the deprecated append field; want only append_action", key)
		}
	}
	for _, key := range tc.wantAbsent {
		if h, found := headerValue(ok.GetHeaders(), key); found {
			t.Errorf("Check OkResponse sets %q = %q; want it not set", key, h.GetHeader().GetValue())
		}
	}
	for _, key := range tc.wantRemove {
		if !slices.Contains(ok.GetHeadersToRemove(), key) {
			t.Errorf("Check OkResponse headers_to_remove = %v; want it to contain %q", ok.GetHeadersToRemove(), key)
		}
	}
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse, tc checkCase, id, token string) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != tc.wantCode {
		t.Errorf("Check status code = %v; want %v", got, tc.wantCode)
	}
	if got := resp.GetStatus().GetMessage(); got != tc.wantReason {
		t.Errorf("Check status message = %q; want %q", got, tc.wantReason)
	}
	if resp.GetOkResponse() != nil {
		t.Fatalf("Check OkResponse = %v; want a DeniedResponse", resp.GetOkResponse())
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("Check DeniedResponse = nil; want HTTP %d", tc.wantHTTP)
	}
	if got := int(d.GetStatus().GetCode()); got != tc.wantHTTP {
		t.Errorf("Check denied HTTP status = %d; want %d", got, tc.wantHTTP)
	}
	if tc.wantChallenge != "" {
		h, found := headerValue(d.GetHeaders(), "www-authenticate")
		switch {
		case !found:
			t.Errorf("Check denied headers = %v; want www-authenticate %q", d.GetHeaders(), tc.wantChallenge)
		case tc.wantReason == "credential_missing" && h.GetHeader().GetValue() != tc.wantChallenge:
			t.Errorf("Check www-authenticate = %q; want %q", h.GetHeader().GetValue(), tc.wantChallenge)
		case !strings.Contains(h.GetHeader().GetValue(), tc.wantChallenge):
			t.Errorf("Check www-authenticate = %q; want it to contain %q", h.GetHeader().GetValue(), tc.wantChallenge)
		}
	}
	var body struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Errorf("Check denied body = %q; want JSON: %v", d.GetBody(), err)
	}
	if body.Error != tc.wantError || body.RequestID != id {
		t.Errorf("Check denied body = %s; want {\"error\":%q,\"request_id\":%q}", d.GetBody(), tc.wantError, id)
	}
	if token == "" {
		return
	}
	needles := tokenNeedles(token)
	for _, n := range needles {
		if strings.Contains(d.GetBody(), n) {
			t.Errorf("Check denied body contains the token (%.20q…); want it never echoed", n)
		}
		for _, h := range d.GetHeaders() {
			if strings.Contains(h.GetHeader().GetValue(), n) {
				t.Errorf("Check denied header %q contains the token (%.20q…); want it never echoed", h.GetHeader().GetKey(), n)
			}
		}
	}
}

// usesDeprecatedAppend reports whether the deprecated HeaderValueOption
// field "append" is set (read by reflection: its accessor is deprecated).
func usesDeprecatedAppend(h *corev3.HeaderValueOption) bool {
	m := h.ProtoReflect()
	return m.Has(m.Descriptor().Fields().ByName("append"))
}

// tokenNeedles are the parts of a token whose appearance anywhere counts
// as leaking it: the whole token and, for a signed one, its signature.
func tokenNeedles(token string) []string {
	out := []string{token}
	if parts := strings.Split(token, "."); len(parts) == 3 && len(parts[2]) >= 16 {
		out = append(out, parts[2])
	}
	return out
}

func assertNoTokenInLogs(t *testing.T, logs string, tokens []string) {
	t.Helper()
	if len(tokens) == 0 {
		t.Fatal("no tokens were sent; the log check would pass vacuously")
	}
	for _, tok := range tokens {
		for _, n := range tokenNeedles(tok) {
			if strings.Contains(logs, n) {
				t.Errorf("tollgate logs contain a token (%.24q…); want only its hash", n)
			}
		}
	}
}

var sampleRE = regexp.MustCompile(`^tollgate_checks_total\{([^}]*)\} (\S+)$`)
var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// checksTotal parses the tollgate_checks_total samples of a Prometheus
// text exposition, keyed by {result, reason}.
func checksTotal(t *testing.T, exposition string) map[[2]string]float64 {
	t.Helper()
	out := map[[2]string]float64{}
	for line := range strings.Lines(exposition) {
		m := sampleRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[[2]string{labels["result"], labels["reason"]}] += v
	}
	if len(out) == 0 {
		t.Fatalf("GET /metrics has no tollgate_checks_total samples; exposition:\n%.2000s", exposition)
	}
	return out
}
