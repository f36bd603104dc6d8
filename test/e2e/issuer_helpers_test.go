package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// This file holds the helpers of the internal-token tests: a downstream
// verifier of Tollgate's internal JWTs (jwx v3), the JWKS fetch, and a
// SoftHSM2 token in a temp dir.

// testIssuer is the internal_token.issuer of these tests.
const testIssuer = "https://tollgate.e2e.test"

// wantToken is what an internal token must carry.
type wantToken struct {
	iss, aud, sub string
	ttl           time.Duration
	// claims are the copied identity claims, exactly: no other claim
	// than these and the registered ones may appear.
	claims map[string]any
}

var registeredInternal = []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti"}

// verifyInternalToken verifies tok as a downstream service would, with
// jwx v3 against set at time now: signature by the key its kid names, iss,
// aud, exp, nbf; then the exact header and claim set the contract
// promises. It returns the kid and the claims.
func verifyInternalToken(set jwk.Set, tok string, w wantToken, now time.Time) (string, map[string]any, error) {
	if _, err := jwt.ParseString(tok,
		jwt.WithKeySet(set),
		jwt.WithValidate(true),
		jwt.WithIssuer(w.iss),
		jwt.WithAudience(w.aud),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithAcceptableSkew(time.Second),
	); err != nil {
		return "", nil, fmt.Errorf("jwt.Parse(internal token) = %w", err)
	}
	parts := strings.Split(tok, ".")
	var hdr map[string]any
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return "", nil, fmt.Errorf("internal token header: %w", err)
	}
	if got := slices.Sorted(maps.Keys(hdr)); !slices.Equal(got, []string{"alg", "kid", "typ"}) || hdr["typ"] != "JWT" {
		return "", nil, fmt.Errorf("internal token header = %v; want exactly alg, kid and typ JWT", hdr)
	}
	kid, _ := hdr["kid"].(string)
	var cl map[string]any
	if err := decodeSegment(parts[1], &cl); err != nil {
		return "", nil, fmt.Errorf("internal token claims: %w", err)
	}
	want := slices.Clone(registeredInternal)
	for k := range w.claims {
		want = append(want, k)
	}
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(cl)); !slices.Equal(got, want) {
		return "", nil, fmt.Errorf("internal token claim names = %v; want exactly %v", got, want)
	}
	if aud, ok := cl["aud"].(string); !ok || aud != w.aud {
		return "", nil, fmt.Errorf("internal token aud = %#v; want the single string %q", cl["aud"], w.aud)
	}
	if cl["sub"] != w.sub {
		return "", nil, fmt.Errorf("internal token sub = %#v; want %q", cl["sub"], w.sub)
	}
	iat, err1 := intClaim(cl["iat"])
	exp, err2 := intClaim(cl["exp"])
	nbf, err3 := intClaim(cl["nbf"])
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", nil, fmt.Errorf("internal token iat/exp/nbf = %v/%v/%v; want integers: %v", cl["iat"], cl["exp"], cl["nbf"], err)
	}
	if time.Duration(exp-iat)*time.Second != w.ttl || nbf != iat {
		return "", nil, fmt.Errorf("internal token exp-iat = %ds, nbf-iat = %ds; want %v and 0", exp-iat, nbf-iat, w.ttl)
	}
	if jti, _ := cl["jti"].(string); len(jti) < 16 {
		return "", nil, fmt.Errorf("internal token jti = %#v; want a random ID of at least 16 characters", cl["jti"])
	}
	for k, v := range w.claims {
		if g, e := canonicalJSON(cl[k]), canonicalJSON(v); g != e {
			return "", nil, fmt.Errorf("internal token claim %q = %s; want %s", k, g, e)
		}
	}
	return kid, cl, nil
}

func intClaim(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%#v is not a number", v)
	}
	return n.Int64()
}

func decodeSegment(seg string, v any) error {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func canonicalJSON(v any) string {
	b, _ := json.Marshal(v)
	var x any
	_ = json.Unmarshal(b, &x)
	b, _ = json.Marshal(x)
	return string(b)
}

// tokenKID returns the kid of a compact JWS without verifying it.
func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := segments(t, tok)
	var hdr struct {
		KID string `json:"kid"`
	}
	if err := decodeSegment(h, &hdr); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return hdr.KID
}

// tokenIAT returns the iat of a compact JWS without verifying it.
func tokenIAT(t *testing.T, tok string) time.Time {
	t.Helper()
	_, p, _ := segments(t, tok)
	var cl struct {
		IAT int64 `json:"iat"`
	}
	if err := decodeSegment(p, &cl); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return time.Unix(cl.IAT, 0)
}

// httpGet fetches url with extra request headers.
func httpGet(ctx context.Context, url string, hdr map[string]string) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, resp.Header, b, err
}

// fetchJWKS GETs a JWKS and requires 200 and a parsable set.
func fetchJWKS(t *testing.T, url string) (jwk.Set, []byte) {
	t.Helper()
	status, _, body, err := httpGet(t.Context(), url, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s = %d %s, %v; want 200", url, status, body, err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("jwk.Parse(GET %s) = %v; body %s", url, err, body)
	}
	return set, body
}

// jwksKIDs lists the kids of a served JWKS.
func jwksKIDs(t *testing.T, url string) []string {
	t.Helper()
	_, body := fetchJWKS(t, url)
	var doc struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	var out []string
	for _, k := range doc.Keys {
		out = append(out, k.KID)
	}
	return out
}

// publicMembers are the only members a published JWK may have.
var publicMembers = []string{"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}

// privateMembers must never appear in a published key (RFC 7517/7518).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"}

// assertPublicOnly fails if a JWKS body has a key with a private member or
// any member besides the public ones.
func assertPublicOnly(t *testing.T, body []byte) {
	t.Helper()
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	if len(doc.Keys) == 0 {
		t.Fatalf("JWKS %s has no keys; want the signing keys", body)
	}
	for i, k := range doc.Keys {
		for _, m := range privateMembers {
			if _, ok := k[m]; ok {
				t.Errorf("JWKS keys[%d] has private member %q; want public members only", i, m)
			}
		}
		for m := range k {
			if !slices.Contains(publicMembers, m) {
				t.Errorf("JWKS keys[%d] has member %q; want only %v", i, m, publicMembers)
			}
		}
	}
}

var maxAgeRE = regexp.MustCompile(`(?:^|[,\s])max-age=(\d+)(?:$|[,\s])`)

// maxAge parses the max-age of a Cache-Control value.
func maxAge(cacheControl string) (time.Duration, bool) {
	m := maxAgeRE.FindStringSubmatch(cacheControl)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// cachingVerifier is a downstream service verifying internal tokens with
// Tollgate's JWKS, cached exactly as long as Cache-Control max-age allows
// (counted from when the request was sent) and revalidated with
// If-None-Match. It never refetches early on an unknown kid: it relies on
// the publish-ahead promise alone.
type cachingVerifier struct {
	url string

	mu        sync.Mutex
	set       jwk.Set
	etag      string
	expires   time.Time
	fetches   int // 200 answers
	notModded int // 304 answers
}

func (v *cachingVerifier) keySet(ctx context.Context) (jwk.Set, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.set != nil && time.Now().Before(v.expires) {
		return v.set, nil
	}
	sent := time.Now()
	hdr := map[string]string{}
	if v.etag != "" && v.set != nil {
		hdr["If-None-Match"] = v.etag
	}
	status, h, body, err := httpGet(ctx, v.url, hdr)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", v.url, err)
	}
	age, ok := maxAge(h.Get("Cache-Control"))
	if !ok {
		return nil, fmt.Errorf("GET %s: Cache-Control %q has no max-age", v.url, h.Get("Cache-Control"))
	}
	switch status {
	case http.StatusOK:
		set, err := jwk.Parse(body)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", v.url, err)
		}
		v.set, v.etag = set, h.Get("ETag")
		v.fetches++
	case http.StatusNotModified:
		v.notModded++
	default:
		return nil, fmt.Errorf("GET %s = %d %s", v.url, status, body)
	}
	v.expires = sent.Add(age)
	return v.set, nil
}

// verify verifies tok with the cached key set at time now.
func (v *cachingVerifier) verify(ctx context.Context, tok string, w wantToken, now time.Time) (string, error) {
	set, err := v.keySet(ctx)
	if err != nil {
		return "", err
	}
	kid, _, err := verifyInternalToken(set, tok, w, now)
	return kid, err
}

// softHSMModule is the PKCS #11 module of SoftHSM2; the tests fail
// without it.
const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM is a SoftHSM2 configuration in a temp dir with one initialised
// token.
type softHSM struct {
	env     []string // SOFTHSM2_CONF=…
	label   string
	pinFile string
}

// newSoftHSM initialises token label (user PIN in pinFile) in a fresh
// SoftHSM2 token directory.
func newSoftHSM(t *testing.T, label string) softHSM {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatalf("softhsm2-util is required (apt-get install softhsm2): %v", err)
	}
	if _, err := os.Stat(softHSMModule); err != nil {
		t.Fatalf("SoftHSM2 module is required (apt-get install softhsm2): %v", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := softHSM{env: []string{"SOFTHSM2_CONF=" + conf}, label: label, pinFile: filepath.Join(dir, "pin")}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678")
	cmd.Env = append(os.Environ(), h.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	if err := os.WriteFile(h.pinFile, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}
