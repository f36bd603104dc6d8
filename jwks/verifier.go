package jwks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Verifier verifies bearer JWTs against the key sets of trusted issuers.
// It is safe for concurrent use.
type Verifier struct {
	issuers  []*issuer
	byIssuer map[string]*issuer
	maxToken int
	cache    *tokenCache
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger
	metrics  *metrics
	opts     options

	lifeMu sync.Mutex
	state  lifeState
	runCtx context.Context // set by Start; read by fetches, which only run after Start
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type lifeState uint8

const (
	stateNew lifeState = iota
	stateRunning
	stateStopped
)

// New validates cfg and builds a Verifier. It does no network I/O; call
// Start to begin loading key sets. Every configuration problem is reported,
// each tagged with its path, e.g. `issuers[1] ("https://idp"): jwks_uri: ...`.
func New(cfg Config, opts ...Option) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("jwks: invalid config: %w", err)
	}
	o := options{backoffBase: time.Second, backoffMax: time.Minute}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.client == nil {
		o.client = defaultHTTPClient()
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	v := &Verifier{
		byIssuer: make(map[string]*issuer, len(cfg.Issuers)),
		maxToken: cfg.MaxTokenBytes,
		cache:    newTokenCache(cfg.CacheMaxEntries, cfg.CacheMaxBytes),
		client:   o.client,
		now:      o.now,
		log:      o.logger,
		opts:     o,
	}
	for _, ic := range cfg.Issuers {
		algs, _ := parseAlgList(ic.Algorithms)
		is := &issuer{
			cfg:     ic,
			algs:    algs,
			remote:  algs.hasAsymmetric(),
			jwksURI: ic.JWKSURI,
		}
		if len(ic.HMACSecret) > 0 {
			var hs algSet
			for _, a := range []alg{algHS256, algHS384, algHS512} {
				if algs.has(a) {
					hs.add(a)
				}
			}
			if !hs.empty() {
				secret := append([]byte(nil), ic.HMACSecret...)
				is.hmac = &verifyKey{algs: hs, pub: secret}
			}
		}
		is.cfg.HMACSecret = nil // only is.hmac holds the secret
		v.issuers = append(v.issuers, is)
		v.byIssuer[ic.Issuer] = is
	}
	if v.metrics, err = newMetrics(v, o.registry); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return v, nil
}

// Start begins one background refresher per issuer with a remote key set.
// Each fetches its key set at once, asynchronously, so Start returns
// promptly; use Missing to learn when every key set has loaded. The
// refreshers run until Stop, independent of ctx's cancellation (ctx's
// values are kept). Start may be called once.
func (v *Verifier) Start(ctx context.Context) error {
	v.lifeMu.Lock()
	defer v.lifeMu.Unlock()
	switch v.state {
	case stateRunning:
		return errors.New("jwks: already started")
	case stateStopped:
		return errors.New("jwks: already stopped")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	v.runCtx, v.cancel = context.WithCancel(context.WithoutCancel(ctx))
	v.state = stateRunning
	for _, is := range v.issuers {
		if is.remote {
			v.wg.Add(1)
			go func() {
				defer v.wg.Done()
				v.refreshLoop(v.runCtx, is)
			}()
		}
	}
	return nil
}

// Stop ends the refreshers and cancels fetches in flight, then waits for
// them until ctx ends. It is safe to call before Start, after a partial
// Start, and more than once. Verify keeps working with the key sets
// already loaded, but no longer refreshes them.
func (v *Verifier) Stop(ctx context.Context) error {
	v.lifeMu.Lock()
	wasRunning := v.state == stateRunning
	v.state = stateStopped
	cancel := v.cancel
	v.lifeMu.Unlock()
	if !wasRunning || cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() {
		v.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jwks: stop: %w", ctx.Err())
	}
}

// goWhileRunning runs f in a goroutine tracked by Stop, if the Verifier is
// running.
func (v *Verifier) goWhileRunning(f func()) bool {
	v.lifeMu.Lock()
	defer v.lifeMu.Unlock()
	if v.state != stateRunning {
		return false
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		f()
	}()
	return true
}

// Missing returns, in configuration order, the issuers whose remote key
// set has never loaded. An empty result means the Verifier is ready.
func (v *Verifier) Missing() []string {
	var out []string
	for _, is := range v.issuers {
		if is.remote && is.keys.Load() == nil {
			out = append(out, is.cfg.Issuer)
		}
	}
	return out
}
