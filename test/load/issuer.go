package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

const (
	benchAudience = "bench"
	tokenLifetime = time.Hour
)

// issuer is an in-process OIDC-style token issuer: a fresh ES256 key, its
// JWKS served on a loopback port, and a minting function. Tollgate is
// configured to trust exactly this issuer, so the benchmark needs nothing
// from outside the machine.
type issuer struct {
	URL     string // "http://127.0.0.1:PORT", the iss claim and config issuer
	JWKSURL string

	priv jwk.Key
	jwks []byte
	srv  *http.Server
	done chan struct{}
}

// startIssuer generates a key and serves its public JWKS at /jwks.json (and
// a minimal discovery document) on 127.0.0.1:0 until Close.
func startIssuer(ctx context.Context) (*issuer, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ES256 key: %w", err)
	}
	priv, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	// The kid is the RFC 7638 thumbprint, so it is stable for the key and
	// the same on the private and public halves.
	if err := jwk.AssignKeyID(priv); err != nil {
		return nil, fmt.Errorf("assign kid: %w", err)
	}
	if err := priv.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
		return nil, err
	}
	if err := priv.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return nil, err
	}
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("marshal JWKS: %w", err)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen JWKS: %w", err)
	}
	is := &issuer{
		URL:  "http://" + ln.Addr().String(),
		priv: priv,
		jwks: jwks,
		done: make(chan struct{}),
	}
	is.JWKSURL = is.URL + "/jwks.json"
	discovery, err := json.Marshal(map[string]string{"issuer": is.URL, "jwks_uri": is.JWKSURL})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(is.jwks)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(discovery)
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(is.done)
		_ = is.srv.Serve(ln)
	}()
	return is, nil
}

// Close stops the JWKS server within ctx's deadline.
func (is *issuer) Close(ctx context.Context) error {
	err := is.srv.Shutdown(ctx)
	if err != nil {
		_ = is.srv.Close()
	}
	<-is.done
	return err
}

// benchRoles are user-n's roles, in its token and in its session: every
// user is a reader, every other one a writer too.
func benchRoles(n int) []string {
	if n%2 == 0 {
		return []string{"reader", "writer"}
	}
	return []string{"reader"}
}

// mint signs a token for user-n: iss is the issuer's own URL, aud "bench",
// exp now+1h, and a "roles" array so claims_to_headers has a list to map.
func (is *issuer) mint(n int, now time.Time) (string, error) {
	roles := benchRoles(n)
	tok, err := jwt.NewBuilder().
		Issuer(is.URL).
		Audience([]string{benchAudience}).
		Subject("user-"+strconv.Itoa(n)).
		IssuedAt(now).
		NotBefore(now.Add(-time.Minute)).
		Expiration(now.Add(tokenLifetime)).
		Claim("roles", roles).
		Build()
	if err != nil {
		return "", err
	}
	// A single WithKey option takes jwx's fast signing path; the kid
	// travels in the header because the key carries one.
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), is.priv))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// mintN mints tokens for user-0 … user-(n-1), spread over all cores (100,000
// ES256 signatures take a few seconds on one core).
func (is *issuer) mintN(ctx context.Context, n int) ([]string, error) {
	if n < 1 {
		return nil, errors.New("need at least one token")
	}
	now := time.Now()
	out := make([]string, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if i%1024 == 0 && ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				t, err := is.mint(i, now)
				if err != nil {
					errs[w] = fmt.Errorf("mint user-%d: %w", i, err)
					return
				}
				out[i] = t
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
