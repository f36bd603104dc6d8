package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxDocumentBytes bounds every response body this package reads.
const maxDocumentBytes = 1 << 20

// defaultRefresh is the refresh interval when the key set response carries
// no usable Cache-Control max-age; it is clamped to [MinRefresh, MaxRefresh].
const defaultRefresh = 5 * time.Minute

// fetchDocument GETs u and returns its body. The final URL (after any
// redirects the client followed) must satisfy the transport policy, the
// status must be 200 and the body at most maxDocumentBytes.
func fetchDocument(ctx context.Context, c *http.Client, u string, insecure bool) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
	}()
	if resp.Request != nil && resp.Request.URL != nil {
		if err := checkParsedURL(resp.Request.URL, insecure); err != nil {
			return nil, nil, fmt.Errorf("after redirect: %w", err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("unexpected HTTP status %d", resp.StatusCode)
	}
	if resp.ContentLength > maxDocumentBytes {
		return nil, nil, fmt.Errorf("response of %d bytes exceeds %d", resp.ContentLength, maxDocumentBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading response: %w", err)
	}
	if len(body) > maxDocumentBytes {
		return nil, nil, fmt.Errorf("response exceeds %d bytes", maxDocumentBytes)
	}
	return body, resp.Header, nil
}

// discoveryURL is where OpenID Connect Discovery 1.0 §4 places the
// provider configuration of issuer.
func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

// parseDiscovery extracts jwks_uri from a provider configuration document
// after checking that it describes issuer and that jwks_uri satisfies the
// transport policy.
func parseDiscovery(body []byte, issuer string, insecure bool) (string, error) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery document is not valid JSON: %w", err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("discovery document names issuer %q, want %q", doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("discovery document has no jwks_uri")
	}
	if err := checkURL(doc.JWKSURI, insecure); err != nil {
		return "", fmt.Errorf("discovery jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

// refreshInterval derives how long a fetched key set is fresh from the
// response's Cache-Control header: max-age (no-store and no-cache count as
// 0), clamped to [lo, hi]. Without a usable max-age it is defaultRefresh,
// clamped likewise.
func refreshInterval(h http.Header, lo, hi time.Duration) time.Duration {
	d := defaultRefresh
	if age, ok := maxAge(h.Values("Cache-Control")); ok {
		d = age
	}
	return min(max(d, lo), hi)
}

// maxAge returns the freshness lifetime stated by Cache-Control values.
func maxAge(values []string) (time.Duration, bool) {
	var age time.Duration
	found := false
	for _, v := range values {
		for dir := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(arg), `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				const maxSecs = int64(1<<63-1) / int64(time.Second)
				age, found = time.Duration(min(n, maxSecs))*time.Second, true
			}
		}
	}
	return age, found
}
