package keyring

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paths served by the Publisher.
const (
	JWKSPath      = "/.well-known/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Publisher serves the Keyring's public keys:
//
//   - GET JWKSPath: {"keys": [...]} with the next, active and retiring
//     keys (public members, kid, alg, use only);
//   - GET DiscoveryPath: {"issuer", "jwks_uri",
//     "id_token_signing_alg_values_supported"}, so verifiers that use
//     OpenID discovery find the keys from the issuer alone.
//
// Both carry Cache-Control: public, max-age=MaxAge and a strong ETag, and
// answer If-None-Match with 304. The bodies are built when the keys change,
// never per request. Other paths are 404, other methods than GET and HEAD
// 405; before Start, 503.
type Publisher struct{ k *Keyring }

var _ http.Handler = (*Publisher)(nil)

// Publisher returns the http.Handler that publishes k's keys.
func (k *Keyring) Publisher() *Publisher { return &Publisher{k: k} }

// documents are the precomputed response bodies.
type documents struct {
	jwks, discovery         []byte
	jwksETag, discoveryETag string
	cacheControl            string
}

func (k *Keyring) buildDocuments(v *view) *documents {
	jwks := []byte(`{"keys":[`)
	var algs []string
	n := 0
	for _, key := range v.keys {
		if key.jwk == nil {
			continue
		}
		if n > 0 {
			jwks = append(jwks, ',')
		}
		jwks = append(jwks, key.jwk...)
		n++
		if !slices.Contains(algs, string(key.Alg)) {
			algs = append(algs, string(key.Alg))
		}
	}
	jwks = append(jwks, "]}"...)
	slices.Sort(algs)
	if algs == nil {
		algs = []string{string(k.cfg.Algorithm)}
	}
	disco, _ := json.Marshal(struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}{k.cfg.Issuer, k.cfg.BaseURL + JWKSPath, algs})
	return &documents{
		jwks:          jwks,
		discovery:     disco,
		jwksETag:      etag(jwks),
		discoveryETag: etag(disco),
		cacheControl:  "public, max-age=" + strconv.Itoa(int(k.cfg.MaxAge/time.Second)),
	}
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + b64.EncodeToString(sum[:18]) + `"`
}

func (p *Publisher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	var tag string
	v := p.k.view.Load()
	switch r.URL.Path {
	case JWKSPath:
		if v != nil {
			body, tag = v.pub.jwks, v.pub.jwksETag
		}
	case DiscoveryPath:
		if v != nil {
			body, tag = v.pub.discovery, v.pub.discoveryETag
		}
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if v == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "keys not loaded", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", v.pub.cacheControl)
	h.Set("ETag", tag)
	if etagMatch(r.Header.Values("If-None-Match"), tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// etagMatch implements If-None-Match's weak comparison (RFC 9110 §13.1.2).
func etagMatch(headers []string, tag string) bool {
	for _, h := range headers {
		for c := range strings.SplitSeq(h, ",") {
			c = strings.TrimSpace(c)
			if c == "*" || strings.TrimPrefix(c, "W/") == tag {
				return true
			}
		}
	}
	return false
}
