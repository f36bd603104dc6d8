package session

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-dev/tollgate/internal/redisclient"
	"golang.org/x/sync/singleflight"
)

const (
	// batchSize bounds the commands in one pipeline.
	batchSize = 256
	// MaxListed bounds the sessions ListSubject reads for one subject.
	MaxListed = 10000
	// revokeSubjectRounds bounds RevokeSubject's passes over the index.
	revokeSubjectRounds = 100
	// startTimeout bounds Start when its context has no deadline.
	startTimeout = 5 * time.Second
)

// RedisStore keeps sessions in Redis (single node, sentinel or cluster).
// Every Redis call has its own deadline (Config.Redis.Timeout) and goes
// through a circuit breaker; failures are reason.SessionStoreUnavailable.
// go-redis reconnects by itself, so a Redis restart needs no restart of
// Tollgate: sessions survive exactly when Redis kept its data.
type RedisStore struct {
	pol     policy
	now     func() time.Time
	log     *slog.Logger
	m       *metrics
	client  redis.UniversalClient
	owned   bool
	timeout time.Duration

	recPrefix, idxPrefix, channel string
	absMs, idleMs, refreshMs      int64
	graceMs                       int64

	br    *breaker
	cache *lookupCache // nil when disabled
	sf    singleflight.Group
	rt    atomic.Uint64 // Redis round trips, for tests and benchmarks

	pingEvery time.Duration

	life      sync.Mutex
	started   bool
	stopped   bool
	subCancel context.CancelFunc
	subDone   chan struct{}
	psMu      sync.Mutex
	ps        *redis.PubSub
}

// NewRedis returns a Redis-backed store. It does not dial; Start does.
// Options: WithClock, WithLogger, WithRegisterer, WithRedisClient.
func NewRedis(cfg Config, opts ...Option) (*RedisStore, error) {
	o := buildOptions(opts)
	if err := cfg.validate(o.client == nil); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &RedisStore{
		pol:       newPolicy(cfg, o),
		now:       o.now,
		log:       o.logger,
		client:    o.client,
		timeout:   cfg.Redis.Timeout,
		recPrefix: cfg.Redis.KeyPrefix + "s:",
		idxPrefix: cfg.Redis.KeyPrefix + "u:",
		channel:   cfg.Redis.KeyPrefix + "invalidate",
		absMs:     cfg.AbsoluteTimeout.Milliseconds(),
		idleMs:    cfg.IdleTimeout.Milliseconds(),
		refreshMs: cfg.IdleRefreshInterval.Milliseconds(),
		graceMs:   o.expiredGrace.Milliseconds(),
		pingEvery: o.pingEvery,
	}
	s.br = newBreaker(cfg.Breaker, func(from, to int32) {
		lvl := slog.LevelWarn
		if to == breakerClosed {
			lvl = slog.LevelInfo
		}
		s.log.Log(context.Background(), lvl, "session store circuit breaker",
			"from", breakerStateName(from), "to", breakerStateName(to))
	})
	if cfg.Cache.Enabled && cfg.Cache.TTL > 0 {
		s.cache = newLookupCache(cfg.Cache)
	}
	g := gauges{breakerState: func() float64 { return float64(s.br.state.Load()) }}
	if s.cache != nil {
		g.cacheActive = func() float64 {
			if s.cache.active.Load() {
				return 1
			}
			return 0
		}
	}
	var err error
	if s.m, err = newMetrics(o.registry, string(StoreRedis), g); err != nil {
		return nil, err
	}
	if s.client == nil {
		if s.client, err = newClient(cfg.Redis); err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
		s.owned = true
	}
	return s, nil
}

// newClient builds the shared Tollgate Redis client for rc.
func newClient(rc RedisConfig) (redis.UniversalClient, error) {
	return redisclient.New(redisclient.Config{
		Addrs: rc.Addrs, MasterName: rc.MasterName, Username: rc.Username,
		PasswordFile: rc.PasswordFile, DB: rc.DB, TLS: rc.TLS.Enabled, CAFile: rc.TLS.CAFile,
		Timeout: rc.Timeout,
	})
}

func (s *RedisStore) recKey(h [32]byte) string        { return s.recPrefix + hashHex(h) }
func (s *RedisStore) recKeyHex(hexHash string) string { return s.recPrefix + hexHash }
func (s *RedisStore) idxKey(subject string) string {
	return s.idxPrefix + hashHex(sha256.Sum256([]byte(subject)))
}

// roundTrip counts n Redis round trips of op.
func (s *RedisStore) roundTrip(op string, n int) {
	s.rt.Add(uint64(n))
	s.m.roundTrip(op, n)
}

// do runs fn, which makes Redis calls, under the breaker and its own
// deadline. redis.Nil passes through unwrapped; other errors become
// SessionStoreUnavailable. A failure the caller caused (its context ended)
// does not count against Redis.
func (s *RedisStore) do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	ok, probe := s.br.allow()
	if !ok {
		return unavailable(op, ErrBreakerOpen)
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := fn(cctx)
	cancel()
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		s.br.done(probe, outcomeSuccess)
		return err
	case ctx.Err() != nil:
		s.br.done(probe, outcomeNeutral)
		return unavailable(op, err)
	default:
		s.br.done(probe, outcomeFailure)
		s.m.storeError(op)
		return unavailable(op, err)
	}
}

// run runs a script by digest, falling back to its source once when Redis
// does not know it (first use, or after a restart or SCRIPT FLUSH).
func (s *RedisStore) run(ctx context.Context, op string, sc *redis.Script, key string, args ...any) *redis.Cmd {
	keys := []string{key}
	cmd := sc.EvalSha(ctx, s.client, keys, args...)
	s.roundTrip(op, 1)
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = sc.Eval(ctx, s.client, keys, args...)
		s.roundTrip(op, 1)
	}
	return cmd
}

// Create implements Store. Steps (see "Atomicity"): prune dead index
// entries when max_per_subject applies, write the record, index it and
// choose victims, revoke the victims.
func (s *RedisStore) Create(ctx context.Context, ns NewSession) (string, Record, error) {
	now := s.now()
	pr, err := s.pol.prepare(ns, now)
	if err != nil {
		return "", Record{}, err
	}
	idx := s.idxKey(ns.Subject)
	if s.pol.maxPerSubject > 0 {
		if err := s.pruneForCreate(ctx, idx, now); err != nil {
			return "", Record{}, err
		}
	}
	rec := pr.rec
	ttl := rec.IdleExpiresAt.Sub(rec.CreatedAt) + s.pol.grace
	var id string
	var h [32]byte
	for attempt := 0; ; attempt++ {
		id, h = newID()
		var created int64
		err := s.do(ctx, opCreate, func(ctx context.Context) error {
			var err error
			created, err = s.run(ctx, opCreate, createScript, s.recKey(h),
				rec.Subject, pr.claimsJSON, pr.mdJSON,
				rec.CreatedAt.UnixMilli(), rec.LastSeen.UnixMilli(),
				rec.IdleExpiresAt.UnixMilli(), rec.ExpiresAt.UnixMilli(),
				ttl.Milliseconds()).Int64()
			return err
		})
		if err != nil {
			return "", Record{}, err
		}
		if created == 1 {
			break
		}
		if attempt == 2 { // 2^-256 per attempt: something else is wrong
			return "", Record{}, unavailable(opCreate, errors.New("session id collision"))
		}
	}
	rec.IDHash = hashHex(h)

	var victims []string
	err = s.do(ctx, opCreate, func(ctx context.Context) error {
		var err error
		victims, err = s.run(ctx, opCreate, indexScript, idx,
			rec.IDHash, now.UnixMicro(), now.Add(-s.pol.absolute).UnixMicro(),
			s.pol.maxPerSubject, (s.pol.absolute + s.pol.grace + time.Minute).Milliseconds()).StringSlice()
		return err
	})
	if err != nil {
		// Nobody knows the ID; delete the unindexed record if we can.
		s.discard(h)
		return "", Record{}, err
	}
	if len(victims) > 0 {
		n, err := s.revokeHashes(ctx, opCreate, idx, victims, now)
		s.m.evicted(n)
		if err != nil {
			// Over the limit and unable to enforce it: withdraw.
			s.discard(h)
			return "", Record{}, err
		}
	}
	return id, rec, nil
}

// discard deletes a record whose ID was never returned, best effort.
func (s *RedisStore) discard(h [32]byte) {
	ctx := context.Background()
	_ = s.do(ctx, opCreate, func(ctx context.Context) error {
		s.roundTrip(opCreate, 1)
		return s.client.Del(ctx, s.recKey(h)).Err()
	})
}

// pruneForCreate removes the index entries of dead sessions, so
// max_per_subject counts live sessions only. It reads the records only
// when the index is full enough for an eviction to be possible.
func (s *RedisStore) pruneForCreate(ctx context.Context, idx string, now time.Time) error {
	var members []string
	err := s.do(ctx, opCreate, func(ctx context.Context) error {
		var err error
		s.roundTrip(opCreate, 1)
		members, err = s.client.ZRange(ctx, idx, 0, MaxListed-1).Result()
		return err
	})
	if err != nil || len(members) < s.pol.maxPerSubject {
		return err
	}
	_, err = s.loadMembers(ctx, opCreate, idx, members, now)
	return err
}

// Lookup implements Store.
func (s *RedisStore) Lookup(ctx context.Context, id string) (Record, error) {
	rec, err := s.lookup(ctx, id)
	s.m.lookup(err)
	return rec, err
}

func (s *RedisStore) lookup(ctx context.Context, id string) (Record, error) {
	h, ok := parseID(id)
	if !ok {
		return Record{}, errMalformed
	}
	if s.cache == nil {
		return s.fetch(ctx, opLookup, h, true)
	}
	if rec, ok := s.cache.get(h, s.now(), &s.pol); ok {
		s.m.cache(true)
		return rec, nil
	}
	s.m.cache(false)
	return s.fetchShared(ctx, h)
}

// fetchShared fetches for a cache miss. Concurrent misses for one session
// share one fetch, unless an invalidation separates them (the generation
// is part of the key). Kept apart from lookup so the hit path does not
// allocate: the closure below makes h escape.
func (s *RedisStore) fetchShared(ctx context.Context, h [32]byte) (Record, error) {
	gen := s.cache.generation()
	var key [40]byte
	copy(key[:], h[:])
	for i := range 8 {
		key[32+i] = byte(gen >> (8 * i))
	}
	ch := s.sf.DoChan(string(key[:]), func() (any, error) {
		// Detached from the first caller: its cancellation must not
		// fail the others. The fetch still has its own deadline.
		rec, err := s.fetch(context.WithoutCancel(ctx), opLookup, h, true)
		if err == nil {
			s.cache.put(h, rec, s.now(), gen)
		}
		return rec, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Record{}, r.Err
		}
		return r.Val.(Record), nil
	case <-ctx.Done():
		return Record{}, unavailable(opLookup, ctx.Err())
	}
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, id string) (Record, error) {
	h, ok := parseID(id)
	if !ok {
		return Record{}, errMalformed
	}
	return s.fetch(ctx, opGet, h, false)
}

// fetch runs lookupScript: one round trip.
func (s *RedisStore) fetch(ctx context.Context, op string, h [32]byte, slide bool) (Record, error) {
	now := s.now()
	slideArg := "0"
	if slide {
		slideArg = "1"
	}
	var res []any
	err := s.do(ctx, op, func(ctx context.Context) error {
		var err error
		res, err = s.run(ctx, op, lookupScript, s.recKey(h),
			now.UnixMilli(), s.idleMs, s.refreshMs, s.absMs, s.graceMs, slideArg).Slice()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return Record{}, errNotFound
	}
	if err != nil {
		return Record{}, err
	}
	if len(res) != 8 {
		return Record{}, unavailable(op, errors.New("unexpected lookup reply"))
	}
	state, _ := res[0].(int64)
	rec, err := parseRecord(h, res[1:])
	if err != nil {
		return Record{}, unavailable(op, err)
	}
	switch state {
	case 0:
		if !now.Before(s.pol.purgeAt(&rec)) {
			return Record{}, errNotFound
		}
		return Record{}, errExpired
	case 2:
		s.m.refreshed()
	}
	return rec, nil
}

// parseRecord decodes sub, cl, md, c, ls, ie, ae as the scripts and HMGET
// return them.
func parseRecord(h [32]byte, v []any) (Record, error) {
	if len(v) != 7 {
		return Record{}, errors.New("corrupt session record")
	}
	str := func(x any) string { s, _ := x.(string); return s }
	ms := func(x any) (time.Time, bool) {
		var n int64
		switch x := x.(type) {
		case int64:
			n = x
		case string:
			var err error
			if n, err = strconv.ParseInt(x, 10, 64); err != nil {
				return time.Time{}, false
			}
		default:
			return time.Time{}, false
		}
		return time.UnixMilli(n).UTC(), true
	}
	rec := Record{IDHash: hashHex(h), Subject: str(v[0])}
	var ok1, ok2, ok3, ok4 bool
	rec.CreatedAt, ok1 = ms(v[3])
	rec.LastSeen, ok2 = ms(v[4])
	rec.IdleExpiresAt, ok3 = ms(v[5])
	rec.ExpiresAt, ok4 = ms(v[6])
	if rec.Subject == "" || !ok1 || !ok2 || !ok3 || !ok4 {
		return Record{}, errors.New("corrupt session record")
	}
	var err error
	if rec.Claims, err = decodeClaims(str(v[1])); err != nil {
		return Record{}, errors.New("corrupt session claims")
	}
	if rec.Metadata, err = decodeMetadata(str(v[2])); err != nil {
		return Record{}, errors.New("corrupt session metadata")
	}
	return rec, nil
}

// Revoke implements Store.
func (s *RedisStore) Revoke(ctx context.Context, id string) error {
	h, ok := parseID(id)
	if !ok {
		return errMalformed
	}
	hexHash := hashHex(h)
	var res []any
	err := s.do(ctx, opRevoke, func(ctx context.Context) error {
		var err error
		res, err = s.run(ctx, opRevoke, revokeScript, s.recKey(h),
			s.now().UnixMilli(), s.absMs, s.channel, hexHash).Slice()
		return err
	})
	if s.cache != nil {
		s.cache.invalidate(h)
	}
	if errors.Is(err, redis.Nil) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return unavailable(opRevoke, errors.New("unexpected revoke reply"))
	}
	if sub, _ := res[1].(string); sub != "" {
		// Best effort: a dead entry left behind is pruned later.
		_ = s.do(ctx, opRevoke, func(ctx context.Context) error {
			s.roundTrip(opRevoke, 1)
			return s.client.ZRem(ctx, s.idxKey(sub), hexHash).Err()
		})
	}
	if live, _ := res[0].(int64); live == 0 {
		return errExpired
	}
	return nil
}

// RevokeSubject implements Store.
func (s *RedisStore) RevokeSubject(ctx context.Context, subject string) (int, error) {
	idx := s.idxKey(subject)
	total := 0
	for range revokeSubjectRounds {
		var members []string
		err := s.do(ctx, opRevokeSubject, func(ctx context.Context) error {
			var err error
			s.roundTrip(opRevokeSubject, 1)
			members, err = s.client.ZRange(ctx, idx, 0, 4*batchSize-1).Result()
			return err
		})
		if err != nil {
			return total, err
		}
		n, err := s.revokeHashes(ctx, opRevokeSubject, idx, members, s.now())
		total += n
		if err != nil || len(members) < 4*batchSize {
			return total, err
		}
	}
	return total, nil
}

// revokeHashes revokes the given records, then removes them from the
// index, and returns how many were live.
func (s *RedisStore) revokeHashes(ctx context.Context, op, idx string, hashes []string, now time.Time) (int, error) {
	live := 0
	for start := 0; start < len(hashes); start += batchSize {
		batch := hashes[start:min(start+batchSize, len(hashes))]
		var cmds []redis.Cmder
		err := s.do(ctx, op, func(ctx context.Context) error {
			s.roundTrip(op, 1)
			var err error
			cmds, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, hh := range batch {
					revokeScript.Eval(ctx, p, []string{s.recKeyHex(hh)}, now.UnixMilli(), s.absMs, s.channel, hh)
				}
				return nil
			})
			if errors.Is(err, redis.Nil) { // an absent record, judged per command below
				err = nil
			}
			return err
		})
		if err != nil {
			return live, err
		}
		for i, c := range cmds {
			if s.cache != nil {
				if h, ok := parseHashHex(batch[i]); ok {
					s.cache.invalidate(h)
				}
			}
			res, err := c.(*redis.Cmd).Slice()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return live, unavailable(op, err)
			}
			if n, _ := res[0].(int64); n == 1 {
				live++
			}
		}
		// Only now that the records are gone may the entries go.
		if err := s.do(ctx, op, func(ctx context.Context) error {
			s.roundTrip(op, 1)
			return s.client.ZRem(ctx, idx, toAny(batch)...).Err()
		}); err != nil {
			return live, err
		}
	}
	return live, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// ListSubject implements Store. It returns at most MaxListed sessions.
func (s *RedisStore) ListSubject(ctx context.Context, subject string) ([]Record, error) {
	idx := s.idxKey(subject)
	var members []string
	err := s.do(ctx, opList, func(ctx context.Context) error {
		var err error
		s.roundTrip(opList, 1)
		members, err = s.client.ZRange(ctx, idx, 0, MaxListed-1).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.loadMembers(ctx, opList, idx, members, s.now())
}

var recordFields = []string{"sub", "cl", "md", "c", "ls", "ie", "ae"}

// loadMembers reads the records of index members (in index order) and
// returns the live ones; the entries of absent or expired records are
// removed from the index (safe: such a record never comes back).
func (s *RedisStore) loadMembers(ctx context.Context, op, idx string, members []string, now time.Time) ([]Record, error) {
	var live []Record
	var dead []any
	for start := 0; start < len(members); start += batchSize {
		batch := members[start:min(start+batchSize, len(members))]
		var cmds []redis.Cmder
		err := s.do(ctx, op, func(ctx context.Context) error {
			s.roundTrip(op, 1)
			var err error
			cmds, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, hh := range batch {
					p.HMGet(ctx, s.recKeyHex(hh), recordFields...)
				}
				return nil
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		for i, c := range cmds {
			h, ok := parseHashHex(batch[i])
			if !ok {
				dead = append(dead, batch[i])
				continue
			}
			vals := c.(*redis.SliceCmd).Val()
			if len(vals) == 0 || vals[0] == nil {
				dead = append(dead, batch[i])
				continue
			}
			rec, err := parseRecord(h, vals)
			if err != nil {
				return nil, unavailable(op, err)
			}
			if s.pol.expired(&rec, now) {
				dead = append(dead, batch[i])
				continue
			}
			live = append(live, rec)
		}
	}
	if len(dead) > 0 {
		err := s.do(ctx, op, func(ctx context.Context) error {
			s.roundTrip(op, 1)
			return s.client.ZRem(ctx, idx, dead...).Err()
		})
		if err != nil && op != opList { // listing still answers; pruning can wait
			return nil, err
		}
	}
	return live, nil
}

// Start dials Redis and, with the cache enabled, subscribes to the
// invalidation channel and starts the subscriber. An unreachable Redis or
// a rejected login is returned as an error and nothing keeps running; the
// store then still serves (through Redis, without cache) and Start may
// be called again.
func (s *RedisStore) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started {
		return errors.New("session: redis store already started")
	}
	if s.stopped {
		return errors.New("session: redis store stopped")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	s.roundTrip(opStart, 1)
	if err := s.client.Ping(ctx).Err(); err != nil {
		return unavailable(opStart, err)
	}
	if s.cache != nil {
		ps, err := s.subscribe(ctx)
		if err != nil {
			return unavailable(opStart, err)
		}
		s.cache.setActive(true)
		lctx, cancel := context.WithCancel(context.Background())
		s.subCancel, s.subDone = cancel, make(chan struct{})
		s.ps = ps
		go s.subscriber(lctx, ps, s.subDone)
	}
	s.started = true
	return nil
}

// subscribe subscribes to the channel and waits for the confirmation.
func (s *RedisStore) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := s.client.Subscribe(ctx, s.channel)
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	msg, err := ps.ReceiveTimeout(ctx, wait)
	if err == nil {
		if sub, ok := msg.(*redis.Subscription); !ok || sub.Kind != "subscribe" {
			err = fmt.Errorf("unexpected pub/sub reply %T", msg)
		}
	}
	if err != nil {
		_ = ps.Close()
		return nil, err
	}
	return ps, nil
}

var errStale = errors.New("invalidation subscription silent")

// subscriber consumes invalidations until ctx ends. Whenever the
// subscription fails it disables the cache, then resubscribes with
// backoff; the cache comes back with the confirmation.
func (s *RedisStore) subscriber(ctx context.Context, ps *redis.PubSub, done chan struct{}) {
	defer close(done)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	logged := false
	for {
		wasUp, err := s.consume(ctx, ps)
		s.cache.setActive(false)
		_ = ps.Close()
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			backoff, logged = minBackoff, false
		}
		if !logged {
			s.log.Warn("session cache disabled: invalidation subscription lost; resubscribing", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		ps = s.client.Subscribe(ctx, s.channel) // errors surface on receive
		s.psMu.Lock()
		if ctx.Err() != nil {
			s.psMu.Unlock()
			_ = ps.Close()
			return
		}
		s.ps = ps
		s.psMu.Unlock()
	}
}

// consume handles messages until the subscription fails. wasUp reports
// whether it saw a subscription confirmation or a message.
func (s *RedisStore) consume(ctx context.Context, ps *redis.PubSub) (wasUp bool, err error) {
	lastHeard := time.Now()
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.pingEvery)
		if err != nil {
			if ctx.Err() != nil {
				return wasUp, ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return wasUp, err
			}
			if time.Since(lastHeard) > 3*s.pingEvery {
				return wasUp, errStale
			}
			if err := ps.Ping(ctx); err != nil {
				return wasUp, err
			}
			continue
		}
		lastHeard = time.Now()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel {
				s.cache.setActive(true)
				if !wasUp {
					s.log.Info("session cache enabled: invalidation subscription confirmed")
				}
				wasUp = true
			}
		case *redis.Message:
			wasUp = true
			if h, ok := parseHashHex(m.Payload); ok {
				s.cache.invalidate(h)
				s.m.invalidated()
			}
		}
	}
}

// Stop implements Store: it stops the subscriber, disables the cache and
// closes the client unless it came from WithRedisClient.
func (s *RedisStore) Stop(ctx context.Context) error {
	s.life.Lock()
	if s.stopped {
		s.life.Unlock()
		return nil
	}
	s.stopped = true
	cancel, done := s.subCancel, s.subDone
	s.life.Unlock()
	var err error
	if cancel != nil {
		s.psMu.Lock()
		cancel()
		ps := s.ps
		s.psMu.Unlock()
		_ = ps.Close() // unblocks a pending receive
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if s.cache != nil {
		s.cache.setActive(false)
	}
	if s.owned {
		if cerr := s.client.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// cacheActive reports whether lookups may be served from the cache.
func (s *RedisStore) cacheActive() bool { return s.cache != nil && s.cache.active.Load() }

// roundTrips returns the Redis round trips made so far.
func (s *RedisStore) roundTrips() uint64 { return s.rt.Load() }
