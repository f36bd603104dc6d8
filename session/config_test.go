package session

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.withDefaults()
	want := Config{
		Store: StoreMemory, Cookie: "tollgate_session", Header: "x-session-id",
		IdleTimeout: 30 * time.Minute, AbsoluteTimeout: 12 * time.Hour, IdleRefreshInterval: time.Minute,
		OnStoreError: OnErrorDeny,
		Redis:        RedisConfig{Timeout: 50 * time.Millisecond, KeyPrefix: "tollgate:"},
		Cache:        CacheConfig{MaxEntries: 10000, TTL: time.Second},
		Breaker:      BreakerConfig{Threshold: 5, Cooldown: time.Second},
	}
	if c.Store != want.Store || c.Cookie != want.Cookie || c.Header != want.Header ||
		c.IdleTimeout != want.IdleTimeout || c.AbsoluteTimeout != want.AbsoluteTimeout ||
		c.IdleRefreshInterval != want.IdleRefreshInterval || c.OnStoreError != want.OnStoreError ||
		c.Redis.Timeout != want.Redis.Timeout || c.Redis.KeyPrefix != want.Redis.KeyPrefix ||
		c.Cache != want.Cache || c.Breaker != want.Breaker {
		t.Fatalf("defaults = %+v; want %+v", c, want)
	}
	if got := (Config{IdleTimeout: 5 * time.Minute}).withDefaults().IdleRefreshInterval; got != 30*time.Second {
		t.Fatalf("refresh interval for idle 5m = %v; want idle/10 = 30s", got)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("Validate(zero config) = %v; want nil", err)
	}
}

func TestConfigValidateReportsEveryProblemAtItsPath(t *testing.T) {
	t.Parallel()
	c := Config{
		Store:               "disk",
		Cookie:              "bad cookie",
		Header:              "X-Session",
		IdleTimeout:         time.Hour,
		AbsoluteTimeout:     time.Minute,
		IdleRefreshInterval: 40 * time.Minute,
		MaxPerSubject:       -1,
		OnStoreError:        "allow",
		Redis:               RedisConfig{Addrs: []string{"nohost"}, DB: -1, Timeout: -time.Second, TLS: TLSConfig{CAFile: "ca.pem"}},
		Cache:               CacheConfig{TTL: 5 * time.Second},
		Breaker:             BreakerConfig{Threshold: -1},
	}
	err := c.Validate()
	if err == nil {
		t.Fatalf("Validate = nil; want errors")
	}
	for _, path := range []string{
		"store:", "cookie:", "header:", "absolute_timeout:", "idle_refresh_interval:", "max_per_subject:",
		"on_store_error:", "redis.addrs[0]:", "redis.db:", "redis.timeout:", "redis.tls.ca_file:",
		"cache.ttl:", "breaker.threshold:",
	} {
		if !strings.Contains(err.Error(), path) {
			t.Errorf("Validate error lacks %q:\n%v", path, err)
		}
	}
	if err := (Config{Store: StoreRedis}).Validate(); err == nil || !strings.Contains(err.Error(), "redis.addrs:") {
		t.Fatalf("Validate(redis without addrs) = %v; want redis.addrs error", err)
	}
	if _, err := NewRedis(Config{}, WithRedisClient(nil)); err == nil {
		t.Fatalf("NewRedis without addrs or client succeeded")
	}
}

func TestNewDispatchesOnStore(t *testing.T) {
	t.Parallel()
	s, err := New(Config{})
	if _, ok := s.(*MemoryStore); !ok || err != nil {
		t.Fatalf("New(memory) = %T, %v", s, err)
	}
	s, err = New(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}})
	if _, ok := s.(*RedisStore); !ok || err != nil {
		t.Fatalf("New(redis) = %T, %v", s, err)
	}
	_ = s.Stop(context.Background())
	if _, err := New(Config{Store: "disk"}); err == nil {
		t.Fatalf("New(disk) succeeded")
	}
}

func TestMetricsOnlyWithRegisterer(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := NewMemory(Config{}, WithRegisterer(reg)); err != nil {
		t.Fatalf("NewMemory: %v", err)
	}
	// The same registry twice: a clean error, and the registry unchanged.
	if _, err := NewMemory(Config{}, WithRegisterer(reg)); err == nil {
		t.Fatalf("second NewMemory on one registry succeeded")
	}
	s, err := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}, Cache: CacheConfig{Enabled: true}},
		WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	_ = s.Stop(context.Background())
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "tollgate_session") {
			t.Fatalf("metric %s registered globally", mf.GetName())
		}
	}
}

func TestMemoryJanitorForgetsExpiredSessions(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s, err := NewMemory(Config{IdleTimeout: time.Minute, AbsoluteTimeout: time.Hour}, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatalf("second Start succeeded")
	}
	defer s.Stop(context.Background())
	for range 10 {
		create(t, s, "alice")
	}
	clk.Add(time.Minute + expiredGrace)
	if n := s.purge(); n != 10 {
		t.Fatalf("purge = %d; want 10", n)
	}
	s.mu.RLock()
	left := len(s.recs) + len(s.subs)
	s.mu.RUnlock()
	if left != 0 {
		t.Fatalf("%d records or subjects left after purge", left)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop = %v", err)
	}
}

func TestStoresStopWithoutStart(t *testing.T) {
	t.Parallel()
	m, _ := NewMemory(Config{})
	if err := m.Stop(t.Context()); err != nil {
		t.Fatalf("MemoryStore.Stop without Start = %v", err)
	}
	r, _ := NewRedis(Config{Store: StoreRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:1"}}}, WithLogger(slog.New(slog.DiscardHandler)))
	if err := r.Stop(t.Context()); err != nil {
		t.Fatalf("RedisStore.Stop without Start = %v", err)
	}
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	var transitions []string
	b := newBreaker(BreakerConfig{Threshold: 3, Cooldown: 50 * time.Millisecond}, func(from, to int32) {
		transitions = append(transitions, breakerStateName(from)+"→"+breakerStateName(to))
	})
	fail := func() {
		ok, probe := b.allow()
		if !ok {
			t.Fatalf("allow = false while closed")
		}
		b.done(probe, outcomeFailure)
	}
	fail()
	fail()
	if ok, probe := b.allow(); !ok { // a success resets the count
		t.Fatalf("allow = false after 2 failures")
	} else {
		b.done(probe, outcomeSuccess)
	}
	fail()
	fail()
	fail()
	if ok, _ := b.allow(); ok {
		t.Fatalf("allow = true after 3 consecutive failures; want open")
	}
	time.Sleep(60 * time.Millisecond)
	ok, probe := b.allow()
	if !ok || !probe {
		t.Fatalf("allow after cooldown = %v, probe %v; want one probe", ok, probe)
	}
	if ok2, _ := b.allow(); ok2 {
		t.Fatalf("second call during the probe allowed")
	}
	b.done(probe, outcomeNeutral) // the caller gave up: probe again at once
	ok, probe = b.allow()
	if !ok || !probe {
		t.Fatalf("allow after a neutral probe = %v, %v; want another probe", ok, probe)
	}
	b.done(probe, outcomeFailure)
	if ok, _ := b.allow(); ok {
		t.Fatalf("allow right after a failed probe; want open for another cooldown")
	}
	time.Sleep(60 * time.Millisecond)
	ok, probe = b.allow()
	b.done(probe, outcomeSuccess)
	if !ok || b.state.Load() != breakerClosed {
		t.Fatalf("state after a successful probe = %s; want closed", breakerStateName(b.state.Load()))
	}
	want := "closed→open open→half-open half-open→open open→half-open half-open→open open→half-open half-open→closed"
	if got := strings.Join(transitions, " "); got != want {
		t.Fatalf("transitions = %s; want %s", got, want)
	}
}

func TestCacheRefusesFillsThatRacedAnInvalidation(t *testing.T) {
	t.Parallel()
	c := newLookupCache(CacheConfig{MaxEntries: 2, TTL: time.Second})
	p := policy{idle: time.Hour, absolute: time.Hour, refresh: time.Minute}
	now := time.Now()
	rec := Record{CreatedAt: now, LastSeen: now, IdleExpiresAt: now.Add(time.Hour), ExpiresAt: now.Add(time.Hour)}
	var h1, h2, h3 [32]byte
	h1[0], h2[0], h3[0] = 1, 2, 3

	c.put(h1, rec, now, c.generation())
	if _, ok := c.get(h1, now, &p); ok {
		t.Fatalf("inactive cache served an entry")
	}
	c.setActive(true)
	gen := c.generation()
	c.invalidate(h2) // an invalidation while h1's fetch is in flight
	c.put(h1, rec, now, gen)
	if _, ok := c.get(h1, now, &p); ok {
		t.Fatalf("cache kept a fill that raced an invalidation")
	}
	c.put(h1, rec, now, c.generation())
	if _, ok := c.get(h1, now, &p); !ok {
		t.Fatalf("cache miss after a clean fill")
	}
	if _, ok := c.get(h1, now.Add(time.Second), &p); ok {
		t.Fatalf("cache served an entry at its TTL")
	}
	if _, ok := c.get(h1, now.Add(time.Minute), &p); ok {
		t.Fatalf("cache served an entry due for an idle refresh")
	}
	c.put(h2, rec, now, c.generation())
	c.put(h3, rec, now, c.generation())
	if n := c.len(); n != 2 {
		t.Fatalf("cache holds %d entries; want at most 2", n)
	}
	c.setActive(false)
	if n := c.len(); n != 0 {
		t.Fatalf("cache holds %d entries after deactivation; want 0", n)
	}
}

func TestCacheHitDoesNotAllocate(t *testing.T) {
	c := newLookupCache(CacheConfig{MaxEntries: 10, TTL: time.Second})
	p := policy{idle: time.Hour, absolute: time.Hour, refresh: time.Minute}
	now := time.Now()
	rec := Record{CreatedAt: now, LastSeen: now, IdleExpiresAt: now.Add(time.Hour), ExpiresAt: now.Add(time.Hour)}
	var h [32]byte
	c.setActive(true)
	c.put(h, rec, now, c.generation())
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := c.get(h, now, &p); !ok {
			t.Fatal("miss")
		}
	}); n != 0 {
		t.Fatalf("cache hit allocates %v times; want 0", n)
	}
}
