package jwks

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// issuer is the state of one trusted issuer. Its configuration is fixed at
// New; its key set is replaced atomically by refreshes.
type issuer struct {
	cfg    IssuerConfig
	algs   algSet
	hmac   *verifyKey // the HMAC secret; nil unless an HS* algorithm is allowed
	remote bool       // whether the issuer has a remote key set

	keys atomic.Pointer[keySet] // nil until the first successful fetch

	// fetches coalesces every fetch of this issuer (background and
	// on-demand), so at most one runs at a time and installs are ordered.
	fetches singleflight.Group

	uriMu       sync.Mutex
	jwksURI     string // configured, or resolved by discovery ("" = not yet)
	lastSkipped string // summary of the entries skipped by the last fetch

	// On-demand refreshes (after a kid miss) are coalesced into one
	// in-flight refresh and rate-limited to one per
	// UnknownKeyRefreshInterval.
	odMu   sync.Mutex
	odLast time.Time     // start of the last on-demand refresh
	odDone chan struct{} // closed when the in-flight on-demand refresh ends
}

// refresh fetches and installs is's key set, joining a fetch already in
// flight. It returns how long the result stays fresh.
func (v *Verifier) refresh(is *issuer) (time.Duration, error) {
	r, err, _ := is.fetches.Do("", func() (any, error) {
		return v.fetchAndInstall(is)
	})
	ttl, _ := r.(time.Duration)
	return ttl, err
}

func (v *Verifier) fetchAndInstall(is *issuer) (time.Duration, error) {
	ctx := v.runCtx
	uri, err := v.resolveJWKSURI(ctx, is)
	if err == nil {
		var ttl time.Duration
		if ttl, err = v.fetchKeySet(ctx, is, uri); err == nil {
			v.metrics.fetched(is.cfg.Issuer, fetchSuccess)
			return ttl, nil
		}
		if is.cfg.Discovery {
			// The provider may have moved its keys: rediscover next time.
			is.uriMu.Lock()
			is.jwksURI = ""
			is.uriMu.Unlock()
		}
	}
	if ctx.Err() != nil {
		return 0, err // shutting down: not a fetch failure worth reporting
	}
	v.metrics.fetched(is.cfg.Issuer, fetchError)
	attrs := []any{slog.String("issuer", is.cfg.Issuer), slog.String("error", err.Error())}
	if ks := is.keys.Load(); ks != nil {
		attrs = append(attrs, slog.Bool("serving_stale", true), slog.Duration("key_set_age", v.now().Sub(ks.fetchedAt)))
	} else {
		attrs = append(attrs, slog.Bool("serving_stale", false))
	}
	v.log.Warn("jwks: key set fetch failed", attrs...)
	return 0, err
}

// resolveJWKSURI returns the key set URL, running discovery when needed.
func (v *Verifier) resolveJWKSURI(ctx context.Context, is *issuer) (string, error) {
	is.uriMu.Lock()
	uri := is.jwksURI
	is.uriMu.Unlock()
	if uri != "" {
		return uri, nil
	}
	fctx, cancel := context.WithTimeout(ctx, is.cfg.FetchTimeout)
	defer cancel()
	body, _, err := fetchDocument(fctx, v.client, discoveryURL(is.cfg.Issuer), is.cfg.InsecureHTTP)
	if err != nil {
		return "", err
	}
	uri, err = parseDiscovery(body, is.cfg.Issuer, is.cfg.InsecureHTTP)
	if err != nil {
		return "", err
	}
	is.uriMu.Lock()
	is.jwksURI = uri
	is.uriMu.Unlock()
	return uri, nil
}

func (v *Verifier) fetchKeySet(ctx context.Context, is *issuer, uri string) (time.Duration, error) {
	fctx, cancel := context.WithTimeout(ctx, is.cfg.FetchTimeout)
	defer cancel()
	body, hdr, err := fetchDocument(fctx, v.client, uri, is.cfg.InsecureHTTP)
	if err != nil {
		return 0, err
	}
	keys, skipped, err := parseKeySet(body)
	v.logSkipped(is, skipped)
	if err != nil {
		return 0, err
	}
	v.install(is, keys)
	return refreshInterval(hdr, is.cfg.MinRefresh, is.cfg.MaxRefresh), nil
}

// logSkipped logs the key set entries that were not loaded, once per
// change, so an IdP that always publishes, say, an encryption key does not
// produce a warning every refresh.
func (v *Verifier) logSkipped(is *issuer, skipped []skippedKey) {
	var b strings.Builder
	for _, s := range skipped {
		fmt.Fprintf(&b, "%d/%s/%s;", s.index, s.kid, s.reason)
	}
	is.uriMu.Lock()
	changed := b.String() != is.lastSkipped
	is.lastSkipped = b.String()
	is.uriMu.Unlock()
	if !changed {
		return
	}
	for _, s := range skipped {
		v.log.Warn("jwks: key skipped", slog.String("issuer", is.cfg.Issuer),
			slog.Int("index", s.index), slog.String("kid", s.kid), slog.String("reason", s.reason))
	}
}

// install swaps in a new key set. Keys that survive keep their identity;
// keys that left are revoked, which also retires the tokens cached under
// them.
func (v *Verifier) install(is *issuer, keys []*verifyKey) {
	prev := is.keys.Load()
	merged, added, removed := carryOver(prev, keys)
	is.keys.Store(newKeySet(merged, v.now()))
	for _, k := range removed {
		k.revoked.Store(true)
	}
	if len(removed) > 0 {
		v.cache.purgeRevoked()
	}
	if added > 0 || len(removed) > 0 {
		v.log.Info("jwks: key set changed", slog.String("issuer", is.cfg.Issuer),
			slog.Int("keys", len(merged)), slog.Int("added", added), slog.Int("removed", len(removed)))
	}
}

// refreshLoop keeps is's key set fresh until ctx ends: first fetch at once,
// then again when the key set's freshness lifetime runs out (less a little
// jitter), or after an exponential, capped backoff while fetches fail.
func (v *Verifier) refreshLoop(ctx context.Context, is *issuer) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var backoff time.Duration
	maxBackoff := min(v.opts.backoffMax, is.cfg.MinRefresh)
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		ttl, err := v.refresh(is)
		var wait time.Duration
		if err != nil {
			backoff = min(max(2*backoff, v.opts.backoffBase), maxBackoff)
			wait = jitter(backoff, backoff/2)
		} else {
			backoff = 0
			wait = jitter(ttl, is.cfg.MinRefresh)
		}
		timer.Reset(wait)
	}
}

// jitter shortens d by up to 10%, but not below floor, so that replicas
// started together do not refresh in lockstep.
func jitter(d, floor time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	j := d - rand.N(d/10+1)
	return max(j, min(floor, d))
}

// refreshOnDemand triggers, or joins, a refresh of is after a key lookup
// miss and waits for it. It reports whether a refresh ran; it returns false
// at once when the rate limit forbids a new refresh and none is in flight,
// or when the Verifier is not running. A ctx ending first returns its
// error; the refresh itself carries on for the other waiters.
func (v *Verifier) refreshOnDemand(ctx context.Context, is *issuer) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	is.odMu.Lock()
	done := is.odDone
	if done == nil {
		now := v.now()
		if !is.odLast.IsZero() && now.Sub(is.odLast) < is.cfg.UnknownKeyRefreshInterval {
			is.odMu.Unlock()
			return false, nil
		}
		ch := make(chan struct{})
		started := v.goWhileRunning(func() {
			_, _ = v.refresh(is)
			is.odMu.Lock()
			is.odDone = nil
			is.odMu.Unlock()
			close(ch)
		})
		if !started {
			is.odMu.Unlock()
			return false, nil
		}
		is.odLast, is.odDone, done = now, ch, ch
	}
	is.odMu.Unlock()
	select {
	case <-done:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
