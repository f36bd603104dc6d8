package keyring

import (
	"cmp"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Keyring owns the signing keys of Tollgate's internal tokens: it mints
// tokens with the active key, publishes the public keys, and rotates and
// revokes keys in its Store. It is safe for concurrent use.
type Keyring struct {
	cfg     Config
	store   Store
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics

	// claimPrefix[i] is `,"<cfg.Claims[i]>":`, precomputed.
	claimPrefix []string
	payloadHead string // `{"iss":"<issuer>"`

	view  atomic.Pointer[view]
	cache atomic.Pointer[mintCache] // nil when reuse is disabled

	// syncMu serialises store operations and view installs in this
	// process, so a slow Load never installs a view older than the one an
	// Update just committed. Processes are serialised by the store lock.
	syncMu sync.Mutex

	subMu   sync.Mutex
	subs    map[uint64]func(Event)
	nextSub uint64

	kick    chan struct{} // wakes the owner goroutine to recompute its timer
	refresh chan struct{} // asks the owner goroutine to re-read the store now

	lifeMu sync.Mutex
	state  lifeState
	cancel context.CancelFunc
	done   chan struct{}
}

type lifeState uint8

const (
	stateNew lifeState = iota
	stateRunning
	stateStopped
)

// view is an immutable snapshot of the store, replaced atomically.
type view struct {
	keys      []*signingKey // active, next, retiring, revoked
	active    *signingKey   // nil when the store has no usable active key
	byKID     map[string]*signingKey
	pub       *documents
	nextEvent time.Time
}

// signingKey is a key with everything Mint and the Publisher need
// precomputed.
type signingKey struct {
	Record
	signer crypto.Signer
	header string // base64url(protected header) + "."
	jwk    []byte // public JWK; nil when not published
}

// EventKind says what changed.
type EventKind uint8

const (
	// EventActivated: a new key signs from now on (rotation, revocation
	// or first key). Event.KID is the new active key.
	EventActivated EventKind = iota + 1
	// EventRevoked: Event.KID was revoked (here or by another replica).
	// Every cached token it signed must be dropped.
	EventRevoked
)

func (k EventKind) String() string {
	switch k {
	case EventActivated:
		return "activated"
	case EventRevoked:
		return "revoked"
	}
	return "unknown"
}

// Event is a key change, delivered to subscribers.
type Event struct {
	Kind EventKind
	KID  string
}

// New validates cfg and builds a Keyring around store. It does no I/O;
// Start loads or creates the keys.
func New(cfg Config, store Store, opts ...Option) (*Keyring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("keyring: invalid config: %w", err)
	}
	if store == nil {
		return nil, errors.New("keyring: nil store")
	}
	cfg = cfg.withDefaults()
	o := options{}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	k := &Keyring{
		cfg:     cfg,
		store:   store,
		now:     o.now,
		log:     o.logger,
		subs:    map[uint64]func(Event){},
		kick:    make(chan struct{}, 1),
		refresh: make(chan struct{}, 1),
	}
	for _, c := range cfg.Claims {
		k.claimPrefix = append(k.claimPrefix, string(appendJSONString([]byte(","), c))+":")
	}
	k.payloadHead = string(appendJSONString([]byte(`{"iss":`), cfg.Issuer))
	if cfg.MintCacheEntries > 0 {
		k.cache.Store(newMintCache(cfg.MintCacheEntries))
	}
	m, err := newMetrics(k, o.registry)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	k.metrics = m
	return k, nil
}

// Config returns the effective configuration (defaults applied).
func (k *Keyring) Config() Config { return k.cfg }

// Start loads the keys, creating and activating the first key when the
// store has none and applying any transition that is due, then subscribes
// to the store's notifications (when it has them) and starts the owner
// goroutine that rotates on schedule and re-reads the store every
// PollInterval. Errors of the first load or of the subscription are
// returned. ctx bounds the start only.
func (k *Keyring) Start(ctx context.Context) error {
	k.lifeMu.Lock()
	defer k.lifeMu.Unlock()
	switch k.state {
	case stateRunning:
		return errors.New("keyring: already started")
	case stateStopped:
		return errors.New("keyring: already stopped")
	}
	if err := k.reload(ctx); err != nil {
		return fmt.Errorf("keyring: loading keys: %w", err)
	}
	if v := k.view.Load(); v.active == nil || !v.nextEvent.After(k.now()) {
		if _, err := k.update(ctx, op{kind: opSync}); err != nil {
			return fmt.Errorf("keyring: preparing keys: %w", err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var changes <-chan struct{}
	if w, ok := k.store.(Watcher); ok {
		ch, err := w.Watch(runCtx)
		if err != nil {
			cancel()
			return fmt.Errorf("keyring: watching store: %w", err)
		}
		changes = ch
	}
	k.cancel = cancel
	k.done = make(chan struct{})
	k.state = stateRunning
	go k.run(runCtx, changes)
	return nil
}

// Stop ends the owner goroutine and waits for it, up to ctx's deadline.
// Minting keeps working with the last loaded keys, but nothing rotates
// any more. It does not close the store. Stop is safe to call more than
// once and without Start.
func (k *Keyring) Stop(ctx context.Context) error {
	k.lifeMu.Lock()
	wasRunning := k.state == stateRunning
	k.state = stateStopped
	cancel, done := k.cancel, k.done
	k.lifeMu.Unlock()
	if !wasRunning {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("keyring: stop: %w", ctx.Err())
	}
}

// opTimeout bounds each store operation of the owner goroutine.
const opTimeout = 30 * time.Second

// run is the owner goroutine: it sleeps until the next scheduled
// transition, the next poll or a store notification.
func (k *Keyring) run(ctx context.Context, changes <-chan struct{}) {
	defer close(k.done)
	defer func() {
		// Let the store's watcher finish: it closes the channel once ctx
		// is done.
		for changes != nil {
			if _, ok := <-changes; !ok {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lastLoad := time.Now()
	var retryAt time.Time
	backoff := time.Duration(0)
	fail := func(what string, err error) {
		backoff = min(max(2*backoff, 250*time.Millisecond), k.cfg.PollInterval)
		retryAt = time.Now().Add(backoff)
		if ctx.Err() == nil {
			k.log.Warn("keyring: "+what+" failed; signing continues with the keys loaded before", "error", err, "retry_in", backoff)
		}
	}
	for {
		wait := k.cfg.PollInterval - time.Since(lastLoad)
		due := false
		if v := k.view.Load(); v != nil && !v.nextEvent.IsZero() {
			if d := v.nextEvent.Sub(k.now()); d < wait {
				wait, due = d, true
			}
		}
		if r := time.Until(retryAt); r > wait {
			wait = r
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			opCtx, cancel := context.WithTimeout(ctx, opTimeout)
			err := k.reload(opCtx)
			cancel()
			lastLoad = time.Now()
			if err != nil {
				fail("reloading keys", err)
			}
		case <-k.kick:
		case <-k.refresh:
			opCtx, cancel := context.WithTimeout(ctx, opTimeout)
			err := k.reload(opCtx)
			cancel()
			lastLoad = time.Now()
			if err != nil {
				fail("reloading keys", err)
			}
		case <-timer.C:
			opCtx, cancel := context.WithTimeout(ctx, opTimeout)
			var err error
			if due {
				_, err = k.update(opCtx, op{kind: opSync})
			} else {
				err = k.reload(opCtx)
			}
			cancel()
			lastLoad = time.Now()
			if err != nil {
				what := "reloading keys"
				if due {
					what = "scheduled key transition"
				}
				fail(what, err)
				continue
			}
			backoff, retryAt = 0, time.Time{}
		}
	}
}

// reload reads the store and installs what it holds.
func (k *Keyring) reload(ctx context.Context) error {
	k.syncMu.Lock()
	keys, err := k.store.Load(ctx)
	var events []Event
	if err == nil {
		events, err = k.install(keys)
	}
	k.syncMu.Unlock()
	if err != nil {
		k.metrics.storeError("load")
		return err
	}
	k.notify(events)
	return nil
}

// update runs plan under the store lock and installs the result.
func (k *Keyring) update(ctx context.Context, o op) (outcome, error) {
	k.syncMu.Lock()
	var out outcome
	keys, err := k.store.Update(ctx, func(cur []StoredKey, gen GenerateFunc) ([]Record, error) {
		out = outcome{} // a store may retry fn
		return k.plan(cur, gen, k.now(), o, &out)
	})
	var events []Event
	if err == nil {
		events, err = k.install(keys)
	}
	k.syncMu.Unlock()
	if err != nil {
		if !errors.Is(err, ErrUnknownKey) {
			k.metrics.storeError("update")
		}
		return outcome{}, err
	}
	k.metrics.rotated(out.promoted)
	if out.revoked != "" {
		k.metrics.revokedKey()
		k.log.Warn("keyring: key revoked", "kid", out.revoked)
	}
	if out.promoted > 0 {
		if v := k.view.Load(); v.active != nil {
			k.log.Info("keyring: signing key rotated", "kid", v.active.KID)
		}
	}
	k.notify(events)
	select {
	case k.kick <- struct{}{}:
	default:
	}
	return out, nil
}

// install builds a view from keys and swaps it in. It clears the mint
// cache when the active key changes or a key is revoked, and returns the
// events to deliver (after syncMu is released). Caller holds syncMu.
func (k *Keyring) install(keys []StoredKey) ([]Event, error) {
	v, err := k.buildView(keys)
	if err != nil {
		return nil, err
	}
	old := k.view.Swap(v)
	if old == nil {
		return nil, nil
	}
	var events []Event
	for _, ov := range old.keys {
		if ov.State == StateRevoked || ov.State == StateRetiring {
			continue
		}
		nk := v.byKID[ov.KID]
		// Revoked here or elsewhere; or an active/next key that vanished
		// without passing through retiring, which only a revocation
		// (whose tombstone has already expired) or tampering explains.
		if nk == nil || nk.State == StateRevoked {
			events = append(events, Event{Kind: EventRevoked, KID: ov.KID})
		}
	}
	oldActive, newActive := "", ""
	if old.active != nil {
		oldActive = old.active.KID
	}
	if v.active != nil {
		newActive = v.active.KID
	}
	if newActive != oldActive && newActive != "" {
		events = append(events, Event{Kind: EventActivated, KID: newActive})
	}
	if len(events) > 0 || newActive != oldActive {
		if k.cache.Load() != nil {
			k.cache.Store(newMintCache(k.cfg.MintCacheEntries))
		}
	}
	return events, nil
}

func (k *Keyring) buildView(keys []StoredKey) (*view, error) {
	v := &view{byKID: make(map[string]*signingKey, len(keys))}
	recs := make([]Record, 0, len(keys))
	for _, sk := range keys {
		if _, dup := v.byKID[sk.KID]; dup {
			return nil, fmt.Errorf("store holds key %s twice", sk.KID)
		}
		key := &signingKey{Record: sk.Record, signer: sk.Signer}
		if sk.State.published() {
			if sk.Signer == nil {
				return nil, fmt.Errorf("key %s: no key material", sk.KID)
			}
			if err := checkSigner(sk.Signer, sk.Alg, sk.KID); err != nil {
				return nil, fmt.Errorf("key %s: %w", sk.KID, err)
			}
			jwk, err := publicJWK(sk.Alg, sk.KID, sk.Signer.Public())
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", sk.KID, err)
			}
			key.jwk = jwk
			hdr, _ := json.Marshal(struct {
				Alg Algorithm `json:"alg"`
				KID string    `json:"kid"`
				Typ string    `json:"typ"`
			}{sk.Alg, sk.KID, "JWT"})
			key.header = b64.EncodeToString(hdr) + "."
		}
		v.byKID[sk.KID] = key
		v.keys = append(v.keys, key)
		recs = append(recs, sk.Record)
		if sk.State == StateActive && (v.active == nil || sk.ActivatedAt.After(v.active.ActivatedAt)) {
			v.active = key
		}
	}
	slices.SortFunc(v.keys, func(a, b *signingKey) int { return compareRecords(a.Record, b.Record) })
	v.nextEvent = nextEvent(recs, k.cfg, k.now())
	v.pub = k.buildDocuments(v)
	return v, nil
}

// compareRecords orders keys for the JWKS and List: active, next,
// retiring, revoked; newest first within a state; then by kid, so the
// published document (and its ETag) is the same on every replica.
func compareRecords(a, b Record) int {
	if c := cmp.Compare(stateOrder(a.State), stateOrder(b.State)); c != 0 {
		return c
	}
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.KID, b.KID)
}

func stateOrder(s State) int {
	switch s {
	case StateActive:
		return 0
	case StateNext:
		return 1
	case StateRetiring:
		return 2
	}
	return 3
}

// Subscribe registers fn to be called after every key change seen by this
// process (its own or, through the store, another replica's). fn is called
// from the goroutine that observed the change, after the new keys are in
// use; it must not block for long. The returned function unsubscribes.
func (k *Keyring) Subscribe(fn func(Event)) (unsubscribe func()) {
	k.subMu.Lock()
	id := k.nextSub
	k.nextSub++
	k.subs[id] = fn
	k.subMu.Unlock()
	return func() {
		k.subMu.Lock()
		delete(k.subs, id)
		k.subMu.Unlock()
	}
}

func (k *Keyring) notify(events []Event) {
	if len(events) == 0 {
		return
	}
	k.subMu.Lock()
	fns := make([]func(Event), 0, len(k.subs))
	for _, fn := range k.subs {
		fns = append(fns, fn)
	}
	k.subMu.Unlock()
	for _, e := range events {
		for _, fn := range fns {
			fn(e)
		}
	}
}

// Rotate starts a rotation now instead of waiting for RotationPeriod:
//
//   - If a next key has been published for at least PublishAhead, it
//     becomes the active key at once and the active key retires (it stays
//     published for GracePeriod). The returned key is the new active key.
//   - If a next key exists but was published less than PublishAhead ago,
//     its activation is brought forward to CreatedAt+PublishAhead, the
//     earliest moment every verifier honouring Cache-Control holds it;
//     the owner goroutine promotes it then. The returned key is that next
//     key (State next, ActivateAt set).
//   - Otherwise a next key is created, published now and scheduled to
//     sign at now+PublishAhead. The returned key is that next key.
//
// So calling Rotate twice, PublishAhead apart, switches the signing key
// without a single failed verification downstream. To stop using a key
// at once, use Revoke. Rotate works without Start (the CLI uses it so);
// a running Keyring of any process sharing the store picks the change up.
func (k *Keyring) Rotate(ctx context.Context) (KeyInfo, error) {
	out, err := k.update(ctx, op{kind: opRotate})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("keyring: rotate: %w", err)
	}
	return k.info(out.result), nil
}

// Revoke withdraws kid at once, for a suspected leak: the key leaves the
// published set immediately, its material is destroyed, and subscribers
// of every replica get EventRevoked (the mint cache drops the tokens it
// signed). If kid was the active key, a freshly generated key becomes
// active immediately; it was not published ahead, so verifiers that
// refresh only on their cache schedule reject new tokens for up to
// MaxAge. Revoking a next or retiring key leaves the active key alone.
// Revoking a revoked key is a no-op; an unknown kid is ErrUnknownKey.
func (k *Keyring) Revoke(ctx context.Context, kid string) error {
	if _, err := k.update(ctx, op{kind: opRevoke, kid: kid}); err != nil {
		return fmt.Errorf("keyring: revoke %s: %w", kid, err)
	}
	return nil
}

// List reads the store and returns every key, active first, then next,
// retiring and revoked, newest first within a state.
func (k *Keyring) List(ctx context.Context) ([]KeyInfo, error) {
	keys, err := k.store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("keyring: list: %w", err)
	}
	out := make([]KeyInfo, 0, len(keys))
	for _, sk := range keys {
		out = append(out, k.info(sk.Record))
	}
	slices.SortFunc(out, func(a, b KeyInfo) int { return compareRecords(a.Record, b.Record) })
	return out, nil
}

func (k *Keyring) info(r Record) KeyInfo {
	ki := KeyInfo{Record: r, Published: r.State.published()}
	switch r.State {
	case StateRetiring:
		ki.ExpiresAt = r.RetiredAt.Add(k.cfg.GracePeriod)
	case StateRevoked:
		ki.ExpiresAt = r.RevokedAt.Add(k.cfg.GracePeriod)
	}
	return ki
}

// ActiveKID returns the kid of the key that signs now, or "" before the
// keys are loaded.
func (k *Keyring) ActiveKID() string {
	if v := k.view.Load(); v != nil && v.active != nil {
		return v.active.KID
	}
	return ""
}
