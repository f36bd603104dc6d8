package session

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// newTestRedis builds a RedisStore on the shared single node with its own
// key prefix, started, stopped at cleanup.
func newTestRedis(t *testing.T, cfg Config, opts ...Option) *RedisStore {
	t.Helper()
	cfg.Store = StoreRedis
	if cfg.Redis.KeyPrefix == "" {
		cfg.Redis.KeyPrefix = uniquePrefix()
	}
	if len(cfg.Redis.Addrs) == 0 {
		cfg.Redis.Addrs = []string{sharedRedis.addr}
	}
	if cfg.Redis.Timeout == 0 {
		cfg.Redis.Timeout = time.Second
	}
	s, err := NewRedis(cfg, append([]Option{WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	startStop(t, s)
	return s
}

// quiet discards store logs; background goroutines may log after a test.
var quiet = slog.New(slog.DiscardHandler)

func create(t *testing.T, s Store, subject string) (string, Record) {
	t.Helper()
	id, rec, err := recordingStore{s}.Create(t.Context(), NewSession{Subject: subject})
	if err != nil {
		t.Fatalf("Create(%q) = %v", subject, err)
	}
	return id, rec
}

func TestRedisKeyLayoutAndTTLs(t *testing.T) {
	t.Parallel()
	s := newTestRedis(t, Config{})
	rdb := rawClient(t, sharedRedis.addr)
	ctx := t.Context()
	_, rec := create(t, s, "alice")

	recKey := s.recPrefix + rec.IDHash
	if typ := rdb.Type(ctx, recKey).Val(); typ != "hash" {
		t.Fatalf("TYPE %s = %q; want hash", recKey, typ)
	}
	fields := rdb.HKeys(ctx, recKey).Val()
	if len(fields) != 7 {
		t.Fatalf("HKEYS = %v; want sub cl md c ls ie ae", fields)
	}
	// TTL = idle expiry + one minute of grace.
	want := DefaultIdleTimeout + expiredGrace
	if ttl := rdb.PTTL(ctx, recKey).Val(); ttl > want || ttl < want-5*time.Second {
		t.Fatalf("PTTL(record) = %v; want about %v", ttl, want)
	}
	idx := s.idxKey("alice")
	if typ := rdb.Type(ctx, idx).Val(); typ != "zset" {
		t.Fatalf("TYPE %s = %q; want zset", idx, typ)
	}
	if m := rdb.ZRange(ctx, idx, 0, -1).Val(); len(m) != 1 || m[0] != rec.IDHash {
		t.Fatalf("ZRANGE index = %v; want [%s]", m, rec.IDHash)
	}
	if ttl := rdb.PTTL(ctx, idx).Val(); ttl < DefaultAbsoluteTimeout {
		t.Fatalf("PTTL(index) = %v; want at least the absolute timeout", ttl)
	}
}

func TestRedisTTLFollowsSlidingAndExpires(t *testing.T) {
	t.Parallel()
	const u = 100 * time.Millisecond
	s := newTestRedis(t, Config{IdleTimeout: 10 * u, AbsoluteTimeout: 20 * u}, withExpiredGrace(0))
	rdb := rawClient(t, sharedRedis.addr)
	id, rec := create(t, s, "alice")
	key := s.recPrefix + rec.IDHash
	if ttl := rdb.PTTL(t.Context(), key).Val(); ttl > 10*u || ttl < 8*u {
		t.Fatalf("PTTL after create = %v; want about 1s (idle timeout, no grace)", ttl)
	}
	time.Sleep(5 * u)
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatalf("Lookup = %v", err)
	}
	if ttl := rdb.PTTL(t.Context(), key).Val(); ttl < 8*u {
		t.Fatalf("PTTL after a sliding lookup = %v; want about 1s again", ttl)
	}
	time.Sleep(11 * u)
	if n := rdb.Exists(t.Context(), key).Val(); n != 0 {
		t.Fatalf("record key still exists after its idle expiry")
	}
	_, err := s.Lookup(t.Context(), id)
	wantCode(t, "Lookup after expiry", err, reason.SessionNotFound)
}

func TestRedisMalformedIDNeverReachesRedis(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: any Redis call fails.
	s, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	for _, id := range []string{"", "short", string(make([]byte, 10<<10)), "AAAA\x00AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		_, err := s.Lookup(t.Context(), id)
		wantCode(t, "Lookup(malformed)", err, reason.SessionMalformed)
		wantCode(t, "Revoke(malformed)", s.Revoke(t.Context(), id), reason.SessionMalformed)
	}
	if n := s.roundTrips(); n != 0 {
		t.Fatalf("round trips = %d; want 0", n)
	}
	id, _ := newID()
	_, err = s.Lookup(t.Context(), id)
	wantCode(t, "Lookup(well-formed) with Redis down", err, reason.SessionStoreUnavailable)
}

func TestRedisLookupCostsOneRoundTripWithoutCache(t *testing.T) {
	t.Parallel()
	const u = 100 * time.Millisecond
	s := newTestRedis(t, Config{IdleTimeout: 10 * u, AbsoluteTimeout: 20 * u})
	id, _ := create(t, s, "alice")
	before := s.roundTrips()
	for range 20 {
		if _, err := s.Lookup(t.Context(), id); err != nil {
			t.Fatalf("Lookup = %v", err)
		}
	}
	time.Sleep(2 * u) // the next lookup slides: still one round trip
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatalf("Lookup = %v", err)
	}
	if got := s.roundTrips() - before; got != 21 {
		t.Fatalf("round trips for 21 lookups = %d; want 21", got)
	}
}

func TestRedisSurvivesScriptFlush(t *testing.T) {
	t.Parallel()
	s := newTestRedis(t, Config{})
	id, _ := create(t, s, "alice")
	if err := rawClient(t, sharedRedis.addr).ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatalf("Lookup after SCRIPT FLUSH = %v; want the record", err)
	}
}

// cachedPair returns two stores with the local cache on one Redis, as two
// Tollgate replicas would be.
func cachedPair(t *testing.T, addr string, opts ...Option) (a, b *RedisStore, regB *prometheus.Registry) {
	t.Helper()
	prefix := uniquePrefix()
	cfg := Config{Cache: CacheConfig{Enabled: true}, Redis: RedisConfig{KeyPrefix: prefix, Addrs: []string{addr}}}
	regB = prometheus.NewRegistry()
	a = newTestRedis(t, cfg, append([]Option{withPingEvery(100 * time.Millisecond)}, opts...)...)
	b = newTestRedis(t, cfg, append([]Option{withPingEvery(100 * time.Millisecond), WithRegisterer(regB)}, opts...)...)
	return a, b, regB
}

// waitFor polls cond every millisecond until it holds or d passes, and
// returns the time it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func TestRedisCacheServesWithoutRoundTrips(t *testing.T) {
	t.Parallel()
	_, b, reg := cachedPair(t, sharedRedis.addr)
	id, _ := create(t, b, "alice")
	if _, err := b.Lookup(t.Context(), id); err != nil { // miss: fills the cache
		t.Fatalf("Lookup = %v", err)
	}
	before := b.roundTrips()
	for range 100 {
		if _, err := b.Lookup(t.Context(), id); err != nil {
			t.Fatalf("Lookup = %v", err)
		}
	}
	if got := b.roundTrips() - before; got != 0 {
		t.Fatalf("round trips for 100 cached lookups = %d; want 0", got)
	}
	if hits := counterValue(t, reg, "tollgate_session_cache_requests_total", map[string]string{"result": "hit"}); hits != 100 {
		t.Fatalf("cache hits = %v; want 100", hits)
	}
}

func TestRedisRevokeSubjectInvalidatesOtherReplicasWithin1s(t *testing.T) {
	t.Parallel()
	t.Run("single node", func(t *testing.T) {
		t.Parallel()
		testReplicaInvalidation(t, sharedRedis.addr)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		testReplicaInvalidation(t, sharedClustr.addr, WithRedisClient(clusterClient(t)))
	})
}

func testReplicaInvalidation(t *testing.T, addr string, opts ...Option) {
	a, b, reg := cachedPair(t, addr, opts...)
	id1, _ := create(t, a, "alice")
	id2, _ := create(t, a, "alice")
	for _, id := range []string{id1, id2} {
		for range 2 { // the second lookup is a cache hit
			if _, err := b.Lookup(t.Context(), id); err != nil {
				t.Fatalf("b.Lookup = %v", err)
			}
		}
	}
	if n, err := a.RevokeSubject(t.Context(), "alice"); err != nil || n != 2 {
		t.Fatalf("a.RevokeSubject = %d, %v; want 2", n, err)
	}
	for _, id := range []string{id1, id2} {
		took := waitFor(t, time.Second, "b.Lookup fails after a.RevokeSubject", func() bool {
			_, err := b.Lookup(t.Context(), id)
			return reason.Of(err) == reason.SessionNotFound
		})
		t.Logf("other replica saw the revocation after %v", took)
	}
	waitFor(t, time.Second, "invalidation messages received", func() bool {
		return counterValue(t, reg, "tollgate_session_cache_invalidations_total", nil) >= 2
	})

	// Single revoke as well.
	id3, _ := create(t, a, "bob")
	for range 2 {
		if _, err := b.Lookup(t.Context(), id3); err != nil {
			t.Fatalf("b.Lookup = %v", err)
		}
	}
	if err := a.Revoke(t.Context(), id3); err != nil {
		t.Fatalf("a.Revoke = %v", err)
	}
	waitFor(t, time.Second, "b.Lookup fails after a.Revoke", func() bool {
		_, err := b.Lookup(t.Context(), id3)
		return reason.Of(err) == reason.SessionNotFound
	})
}

func TestRedisCacheBypassedWhilePubSubIsDown(t *testing.T) {
	t.Parallel()
	srv, err := startRedis(filepath.Join(t.TempDir(), "pubsub"))
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(srv.stop)
	a, b, _ := cachedPair(t, srv.addr)
	rdb := rawClient(t, srv.addr)
	id, _ := create(t, a, "alice")
	for range 2 {
		if _, err := b.Lookup(t.Context(), id); err != nil {
			t.Fatalf("b.Lookup = %v", err)
		}
	}
	if !b.cacheActive() {
		t.Fatalf("cache inactive after Start")
	}
	// Kill b's subscription connection only, then revoke at once: the
	// message may be lost, the cached entry must not survive.
	killPubSub(t, rdb, b.channel)
	if err := a.Revoke(t.Context(), id); err != nil {
		t.Fatalf("a.Revoke = %v", err)
	}
	waitFor(t, time.Second, "b.Lookup fails after the revoke", func() bool {
		_, err := b.Lookup(t.Context(), id)
		return reason.Of(err) == reason.SessionNotFound
	})
	waitFor(t, 3*time.Second, "cache re-enabled after resubscription", b.cacheActive)

	// Invalidation works again after the resubscription.
	id2, _ := create(t, a, "alice")
	for range 2 {
		if _, err := b.Lookup(t.Context(), id2); err != nil {
			t.Fatalf("b.Lookup = %v", err)
		}
	}
	before := b.roundTrips()
	if _, err := b.Lookup(t.Context(), id2); err != nil || b.roundTrips() != before {
		t.Fatalf("b.Lookup after resubscription = %v with %d round trips; want a cache hit", err, b.roundTrips()-before)
	}
	if err := a.Revoke(t.Context(), id2); err != nil {
		t.Fatalf("a.Revoke = %v", err)
	}
	waitFor(t, time.Second, "b.Lookup fails after the second revoke", func() bool {
		_, err := b.Lookup(t.Context(), id2)
		return reason.Of(err) == reason.SessionNotFound
	})
}

// killPubSub kills every pub/sub connection of rdb's server (a server
// only this test uses) and checks there were two (a's and b's).
func killPubSub(t *testing.T, rdb *redis.Client, channel string) {
	t.Helper()
	n, err := rdb.Do(t.Context(), "PUBSUB", "NUMSUB", channel).Slice()
	if err != nil || len(n) != 2 || n[1].(int64) != 2 {
		t.Fatalf("PUBSUB NUMSUB %s = %v, %v; want 2 subscribers", channel, n, err)
	}
	killed, err := rdb.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Int64()
	if err != nil || killed != 2 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 2", killed, err)
	}
}

func TestRedisBreakerOpensAndStoreRecoversAfterRestart(t *testing.T) {
	t.Parallel()
	srv, err := startRedis(filepath.Join(t.TempDir(), "restart"))
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(srv.stop)
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		if err := checkNoRawIDs(srv.addr); err != nil {
			t.Errorf("raw IDs in Redis: %v", err)
		}
	})
	reg := prometheus.NewRegistry()
	s := newTestRedis(t, Config{
		Cache:   CacheConfig{Enabled: true},
		Redis:   RedisConfig{Addrs: []string{srv.addr}, Timeout: 50 * time.Millisecond},
		Breaker: BreakerConfig{Threshold: 3, Cooldown: 300 * time.Millisecond},
	}, WithRegisterer(reg), withPingEvery(100*time.Millisecond))
	id, _ := create(t, s, "alice")
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatalf("Lookup = %v", err)
	}
	// Persist, then stop Redis mid-test.
	if err := rawClient(t, srv.addr).Save(t.Context()).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	srv.stop()

	// Failures come quickly and open the breaker…
	waitFor(t, 2*time.Second, "breaker open", func() bool {
		start := time.Now()
		_, err := s.Lookup(t.Context(), id)
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("Lookup with Redis down took %v", took)
		}
		if err == nil {
			return false // a cache hit, until the subscriber notices
		}
		wantCode(t, "Lookup with Redis down", err, reason.SessionStoreUnavailable)
		return errors.Is(err, ErrBreakerOpen)
	})
	// …which then fails lookups without trying Redis (ErrBreakerOpen
	// proves that) in well under 5ms. A loaded machine may deschedule a
	// goroutine now and then, so two slow outliers of 50 are tolerated.
	var slow []time.Duration
	for range 50 {
		start := time.Now()
		_, err := s.Lookup(t.Context(), id)
		if took := time.Since(start); took >= 5*time.Millisecond {
			slow = append(slow, took)
		}
		if !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Lookup with the breaker open = %v; want ErrBreakerOpen", err)
		}
		wantCode(t, "Lookup with the breaker open", err, reason.SessionStoreUnavailable)
	}
	if len(slow) > 2 {
		t.Fatalf("%d of 50 lookups with the breaker open took 5ms or more: %v", len(slow), slow)
	}
	if st := counterValue(t, reg, "tollgate_session_breaker_state", nil); st != float64(breakerOpen) {
		t.Fatalf("breaker state metric = %v; want %d (open)", st, breakerOpen)
	}
	if s.cacheActive() {
		t.Fatalf("cache still active with Redis down")
	}

	// Redis comes back on the same port, with its saved data.
	if err := srv.start(); err != nil {
		t.Fatalf("restarting redis-server: %v", err)
	}
	took := waitFor(t, 10*time.Second, "lookups succeed again", func() bool {
		_, err := s.Lookup(t.Context(), id)
		return err == nil
	})
	t.Logf("recovered %v after the restart", took)
	if st := counterValue(t, reg, "tollgate_session_breaker_state", nil); st != float64(breakerClosed) {
		t.Fatalf("breaker state metric = %v; want 0 (closed)", st)
	}
	create(t, s, "alice")
	waitFor(t, 5*time.Second, "cache re-enabled", s.cacheActive)
}

func TestRedisStartFailsWhenUnreachable(t *testing.T) {
	t.Parallel()
	s, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}, Cache: CacheConfig{Enabled: true}})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err = s.Start(ctx)
	wantCode(t, "Start", err, reason.SessionStoreUnavailable)
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop after a failed Start = %v", err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop = %v", err)
	}
}

func TestRedisPasswordFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startRedis(filepath.Join(dir, "auth"), "--requirepass", "s3cret-pass")
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(srv.stop)
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestRedis(t, Config{Redis: RedisConfig{Addrs: []string{srv.addr}, PasswordFile: good}})
	id, _ := create(t, s, "alice")
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatalf("Lookup = %v", err)
	}
	if _, err := rawClient(t, srv.addr).FlushAll(t.Context()).Result(); err == nil {
		t.Fatalf("FLUSHALL without a password succeeded; the server is not protected")
	}
	s2, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{srv.addr}, PasswordFile: bad}})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	defer s2.Stop(context.Background())
	wantCode(t, "Start with a wrong password", s2.Start(t.Context()), reason.SessionStoreUnavailable)
	if _, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{srv.addr}, PasswordFile: filepath.Join(dir, "missing")}}); err == nil {
		t.Fatalf("NewRedis with a missing password file succeeded")
	}
}

func TestRedisConcurrentCreatesRespectMaxPerSubject(t *testing.T) {
	t.Parallel()
	s := newTestRedis(t, Config{MaxPerSubject: 2})
	errs := make(chan error, 20)
	for range 20 {
		go func() {
			_, _, err := recordingStore{s}.Create(t.Context(), NewSession{Subject: "alice"})
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatalf("Create = %v", err)
		}
	}
	list, err := s.ListSubject(t.Context(), "alice")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListSubject after 20 concurrent creates = %d, %v; want 2", len(list), err)
	}
	// No live record outside the index either.
	rdb := rawClient(t, sharedRedis.addr)
	keys, err := rdb.Keys(t.Context(), s.recPrefix+"*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("record keys = %d, %v; want 2", len(keys), err)
	}
}
