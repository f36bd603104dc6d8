package session

import (
	"crypto/sha256"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is what a behavioural case gets: a fresh store plus a way to let
// time pass (a fake clock for memory, real sleeps for Redis).
type env struct {
	store   Store
	advance func(time.Duration)
	u       time.Duration // the time unit: idle = 10u, absolute = 20u
	reg     *prometheus.Registry
	rs      *RedisStore // nil for the memory store
}

// harness builds envs for one store implementation.
type harness struct {
	name string
	u    time.Duration
	open func(t *testing.T, cfg Config, opts ...Option) *env
}

func memoryHarness() harness {
	const u = time.Minute // fake time: free
	return harness{name: "memory", u: u, open: func(t *testing.T, cfg Config, opts ...Option) *env {
		t.Helper()
		clk := newFakeClock()
		reg := prometheus.NewRegistry()
		opts = append([]Option{WithClock(clk.Now), WithRegisterer(reg), WithLogger(quiet)}, opts...)
		s, err := NewMemory(cfg, opts...)
		if err != nil {
			t.Fatalf("NewMemory: %v", err)
		}
		startStop(t, s)
		return &env{store: recordingStore{s}, advance: clk.Add, u: u, reg: reg}
	}}
}

// redisHarness uses real time: the unit is short so idle and absolute
// timeouts are 1s and 2s; Redis TTLs really expire.
func redisHarness(name string, client func(t *testing.T) Option) harness {
	const u = 100 * time.Millisecond
	return harness{name: name, u: u, open: func(t *testing.T, cfg Config, opts ...Option) *env {
		t.Helper()
		reg := prometheus.NewRegistry()
		cfg.Store = StoreRedis
		cfg.Redis.KeyPrefix = uniquePrefix()
		if cfg.Redis.Timeout == 0 {
			cfg.Redis.Timeout = time.Second // generous under -race
		}
		opts = append([]Option{client(t), WithRegisterer(reg), WithLogger(quiet)}, opts...)
		s, err := NewRedis(cfg, opts...)
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		startStop(t, s)
		return &env{store: recordingStore{s}, advance: time.Sleep, u: u, reg: reg, rs: s}
	}}
}

func singleNode(t *testing.T) Option {
	t.Helper()
	c := rawClient(t, sharedRedis.addr)
	return WithRedisClient(c)
}

func oneNodeCluster(t *testing.T) Option {
	t.Helper()
	return WithRedisClient(clusterClient(t))
}

func harnesses() []harness {
	return []harness{
		memoryHarness(),
		redisHarness("redis", singleNode),
		redisHarness("redis-cluster", oneNodeCluster),
	}
}

func startStop(t *testing.T, s Store) {
	t.Helper()
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
}

// tableConfig scales the behavioural timings to the unit u.
func tableConfig(u time.Duration) Config {
	return Config{IdleTimeout: 10 * u, AbsoluteTimeout: 20 * u}
}

func wantCode(t *testing.T, what string, err error, want reason.Code) {
	t.Helper()
	if got := reason.Of(err); got != want {
		t.Fatalf("%s = %v (%s); want %s", what, err, got, want)
	}
}

func mustCreate(t *testing.T, e *env, ns NewSession) (string, Record) {
	t.Helper()
	id, rec, err := e.store.Create(t.Context(), ns)
	if err != nil {
		t.Fatalf("Create(%q) = %v", ns.Subject, err)
	}
	return id, rec
}

func mustLookup(t *testing.T, e *env, id string) Record {
	t.Helper()
	rec, err := e.store.Lookup(t.Context(), id)
	if err != nil {
		t.Fatalf("Lookup = %v; want a record", err)
	}
	return rec
}

// counterValue sums the samples of a counter family in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				if m.GetCounter() != nil {
					sum += m.GetCounter().GetValue()
				} else if m.GetGauge() != nil {
					sum += m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func hashes(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.IDHash
	}
	return out
}

// storeCase is one behaviour every store must show.
type storeCase struct {
	name  string
	cfg   func(c *Config)
	check func(t *testing.T, e *env)
}

var storeCases = []storeCase{
	{
		name: "create then lookup → the record, keyed by the SHA-256 of the ID",
		check: func(t *testing.T, e *env) {
			id, created := mustCreate(t, e, NewSession{
				Subject:  "alice",
				Claims:   map[string]any{"roles": []string{"admin", "dev"}, "tenant": "t1", "level": 3},
				Metadata: map[string]string{"device": "laptop"},
			})
			raw, err := idEncoding.DecodeString(id)
			if err != nil || len(raw) != 32 || len(id) != 43 {
				t.Fatalf("Create ID = %d chars, decode err %v; want 43 chars of base64url for 32 bytes", len(id), err)
			}
			if sum := sha256.Sum256(raw); created.IDHash != hashHex(sum) {
				t.Fatalf("IDHash = %s; want hex SHA-256 of the ID bytes", created.IDHash)
			}
			got := mustLookup(t, e, id)
			want := Record{
				IDHash:   created.IDHash,
				Subject:  "alice",
				Claims:   map[string]any{"roles": []any{"admin", "dev"}, "tenant": "t1", "level": float64(3)},
				Metadata: map[string]string{"device": "laptop"},
			}
			if got.IDHash != want.IDHash || got.Subject != want.Subject ||
				!reflect.DeepEqual(got.Claims, want.Claims) || !reflect.DeepEqual(got.Metadata, want.Metadata) {
				t.Fatalf("Lookup = %+v; want %+v", got, want)
			}
			if !reflect.DeepEqual(created.Claims, want.Claims) {
				t.Fatalf("Create's record claims = %#v; want %#v (the stored JSON types)", created.Claims, want.Claims)
			}
			if !got.CreatedAt.Equal(created.CreatedAt) || got.ExpiresAt.Sub(got.CreatedAt) != 20*e.u ||
				got.IdleExpiresAt.Sub(got.LastSeen) != 10*e.u {
				t.Fatalf("Lookup times = created %v last %v idle %v abs %v; want abs = created+20u, idle = last+10u",
					got.CreatedAt, got.LastSeen, got.IdleExpiresAt, got.ExpiresAt)
			}
		},
	},
	{
		name: "get reads without sliding; lookup slides",
		check: func(t *testing.T, e *env) {
			id, created := mustCreate(t, e, NewSession{Subject: "alice"})
			e.advance(2 * e.u)
			got, err := e.store.Get(t.Context(), id)
			if err != nil || !got.LastSeen.Equal(created.LastSeen) {
				t.Fatalf("Get = %v, %v; want LastSeen unchanged %v", got.LastSeen, err, created.LastSeen)
			}
			if got := mustLookup(t, e, id); !got.LastSeen.After(created.LastSeen) || !got.IdleExpiresAt.After(created.IdleExpiresAt) {
				t.Fatalf("Lookup after 2u: LastSeen %v IdleExpiresAt %v; want both moved forward", got.LastSeen, got.IdleExpiresAt)
			}
		},
	},
	{
		name: "revoke → lookup not found; revoking again → not found",
		check: func(t *testing.T, e *env) {
			id, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			other, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			if err := e.store.Revoke(t.Context(), id); err != nil {
				t.Fatalf("Revoke = %v; want nil", err)
			}
			_, err := e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup(revoked)", err, reason.SessionNotFound)
			_, err = e.store.Get(t.Context(), id)
			wantCode(t, "Get(revoked)", err, reason.SessionNotFound)
			wantCode(t, "Revoke(revoked)", e.store.Revoke(t.Context(), id), reason.SessionNotFound)
			mustLookup(t, e, other)
			list, err := e.store.ListSubject(t.Context(), "alice")
			if err != nil || len(list) != 1 {
				t.Fatalf("ListSubject after revoke = %d sessions, %v; want 1", len(list), err)
			}
		},
	},
	{
		name: "idle longer than idle_timeout → expired; after the grace → not found",
		check: func(t *testing.T, e *env) {
			id, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			e.advance(12 * e.u)
			_, err := e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup after 12u idle", err, reason.SessionExpired)
			_, err = e.store.Get(t.Context(), id)
			wantCode(t, "Get after 12u idle", err, reason.SessionExpired)
			e.advance(3 * e.u) // 15u: past idle expiry (10u) + grace (3u)
			_, err = e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup after the grace", err, reason.SessionNotFound)
		},
	},
	{
		name: "activity slides the idle expiry, but not past the absolute expiry",
		check: func(t *testing.T, e *env) {
			id, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			for i := 1; i <= 4; i++ { // 4u, 8u, 12u, 16u: each past the last idle expiry without sliding
				e.advance(4 * e.u)
				rec := mustLookup(t, e, id)
				if rec.IdleExpiresAt.After(rec.ExpiresAt) {
					t.Fatalf("IdleExpiresAt %v after ExpiresAt %v", rec.IdleExpiresAt, rec.ExpiresAt)
				}
			}
			e.advance(6 * e.u) // 22u > absolute 20u; idle alone would allow it
			_, err := e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup at 22u", err, reason.SessionExpired)
			wantCode(t, "Revoke of an expired session", e.store.Revoke(t.Context(), id), reason.SessionExpired)
			_, err = e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup after revoking an expired session", err, reason.SessionNotFound)
		},
	},
	{
		name: "sliding writes at most once per refresh interval",
		check: func(t *testing.T, e *env) {
			refreshes := func() float64 {
				return counterValue(t, e.reg, "tollgate_session_idle_refreshes_total", nil)
			}
			id, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			for range 10 {
				mustLookup(t, e, id)
			}
			if got := refreshes(); got != 0 {
				t.Fatalf("refresh writes after 10 lookups within the interval = %v; want 0", got)
			}
			e.advance(e.u + e.u/2)
			for range 10 {
				mustLookup(t, e, id)
			}
			if got := refreshes(); got != 1 {
				t.Fatalf("refresh writes after 10 lookups once the interval passed = %v; want 1", got)
			}
			e.advance(e.u / 4)
			for range 10 {
				mustLookup(t, e, id)
			}
			if got := refreshes(); got != 1 {
				t.Fatalf("refresh writes after 10 more lookups within the interval = %v; want 1", got)
			}
		},
	},
	{
		name: "ttl shorter than absolute_timeout ends the session early",
		check: func(t *testing.T, e *env) {
			id, rec := mustCreate(t, e, NewSession{Subject: "alice", TTL: 5 * e.u})
			if d := rec.ExpiresAt.Sub(rec.CreatedAt); d != 5*e.u {
				t.Fatalf("ExpiresAt - CreatedAt = %v; want 5u", d)
			}
			e.advance(3 * e.u)
			mustLookup(t, e, id)
			e.advance(3 * e.u)
			_, err := e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup at 6u with ttl 5u", err, reason.SessionExpired)
		},
	},
	{
		name: "max_per_subject 1 evicts the older session",
		cfg:  func(c *Config) { c.MaxPerSubject = 1 },
		check: func(t *testing.T, e *env) {
			older, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			bob, _ := mustCreate(t, e, NewSession{Subject: "bob"})
			newer, rec := mustCreate(t, e, NewSession{Subject: "alice"})
			_, err := e.store.Lookup(t.Context(), older)
			wantCode(t, "Lookup(older)", err, reason.SessionNotFound)
			mustLookup(t, e, newer)
			mustLookup(t, e, bob)
			list, err := e.store.ListSubject(t.Context(), "alice")
			if err != nil || !reflect.DeepEqual(hashes(list), []string{rec.IDHash}) {
				t.Fatalf("ListSubject = %v, %v; want only the newer session", hashes(list), err)
			}
			if got := counterValue(t, e.reg, "tollgate_session_evictions_total", nil); got != 1 {
				t.Fatalf("evictions = %v; want 1", got)
			}
		},
	},
	{
		name: "max_per_subject 2 keeps the two newest",
		cfg:  func(c *Config) { c.MaxPerSubject = 2 },
		check: func(t *testing.T, e *env) {
			a, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			e.advance(e.u / 10)
			_, b := mustCreate(t, e, NewSession{Subject: "alice"})
			e.advance(e.u / 10)
			_, c := mustCreate(t, e, NewSession{Subject: "alice"})
			_, err := e.store.Lookup(t.Context(), a)
			wantCode(t, "Lookup(oldest)", err, reason.SessionNotFound)
			list, err := e.store.ListSubject(t.Context(), "alice")
			if err != nil || !reflect.DeepEqual(hashes(list), []string{b.IDHash, c.IDHash}) {
				t.Fatalf("ListSubject = %v, %v; want [b c]", hashes(list), err)
			}
		},
	},
	{
		name: "expired sessions do not count toward max_per_subject",
		cfg:  func(c *Config) { c.MaxPerSubject = 2 },
		check: func(t *testing.T, e *env) {
			active, _ := mustCreate(t, e, NewSession{Subject: "alice"}) // oldest, kept alive
			e.advance(e.u)
			idle, _ := mustCreate(t, e, NewSession{Subject: "alice"}) // never used again
			for range 3 {
				e.advance(4 * e.u)
				mustLookup(t, e, active)
			}
			// 13u: idle expired at 11u; two live sessions after this create.
			_, _ = mustCreate(t, e, NewSession{Subject: "alice"})
			mustLookup(t, e, active)
			_, err := e.store.Lookup(t.Context(), idle)
			if c := reason.Of(err); c != reason.SessionExpired && c != reason.SessionNotFound {
				t.Fatalf("Lookup(idle) = %v; want expired or not found", err)
			}
		},
	},
	{
		name: "revoke-subject ends every session of that subject and no other",
		check: func(t *testing.T, e *env) {
			var alice []string
			for range 3 {
				id, _ := mustCreate(t, e, NewSession{Subject: "alice"})
				alice = append(alice, id)
			}
			bob, _ := mustCreate(t, e, NewSession{Subject: "bob"})
			n, err := e.store.RevokeSubject(t.Context(), "alice")
			if err != nil || n != 3 {
				t.Fatalf("RevokeSubject(alice) = %d, %v; want 3, nil", n, err)
			}
			for _, id := range alice {
				_, err := e.store.Lookup(t.Context(), id)
				wantCode(t, "Lookup(alice's session)", err, reason.SessionNotFound)
			}
			mustLookup(t, e, bob)
			if list, err := e.store.ListSubject(t.Context(), "alice"); err != nil || len(list) != 0 {
				t.Fatalf("ListSubject(alice) = %d sessions, %v; want none", len(list), err)
			}
			if n, err := e.store.RevokeSubject(t.Context(), "alice"); err != nil || n != 0 {
				t.Fatalf("RevokeSubject(alice) again = %d, %v; want 0, nil", n, err)
			}
			if n, err := e.store.RevokeSubject(t.Context(), "nobody"); err != nil || n != 0 {
				t.Fatalf("RevokeSubject(nobody) = %d, %v; want 0, nil", n, err)
			}
		},
	},
	{
		name: "list subject: live sessions, oldest first, expired ones left out",
		check: func(t *testing.T, e *env) {
			_, first := mustCreate(t, e, NewSession{Subject: "alice", Metadata: map[string]string{"device": "phone"}})
			e.advance(6 * e.u)
			_, second := mustCreate(t, e, NewSession{Subject: "alice"})
			e.advance(e.u / 10)
			_, third := mustCreate(t, e, NewSession{Subject: "alice"})
			list, err := e.store.ListSubject(t.Context(), "alice")
			if err != nil || !reflect.DeepEqual(hashes(list), []string{first.IDHash, second.IDHash, third.IDHash}) {
				t.Fatalf("ListSubject = %v, %v; want [first second third]", hashes(list), err)
			}
			if list[0].Metadata["device"] != "phone" {
				t.Fatalf("ListSubject[0].Metadata = %v; want device=phone", list[0].Metadata)
			}
			e.advance(5 * e.u) // first: idle since 0, now 11u+
			list, err = e.store.ListSubject(t.Context(), "alice")
			if err != nil || !reflect.DeepEqual(hashes(list), []string{second.IDHash, third.IDHash}) {
				t.Fatalf("ListSubject after first expired = %v, %v; want [second third]", hashes(list), err)
			}
		},
	},
	{
		name: "malformed IDs → session_malformed without a store call",
		check: func(t *testing.T, e *env) {
			valid, _ := mustCreate(t, e, NewSession{Subject: "alice"})
			nonCanonical := valid[:42] + string(flipLowBits(valid[42]))
			malformed := map[string]string{
				"empty":           "",
				"10 KiB":          strings.Repeat("A", 10<<10),
				"65 bytes":        strings.Repeat("A", 65),
				"42 chars":        valid[:42],
				"44 chars":        valid + "A",
				"not base64url":   "!" + valid[1:],
				"std alphabet":    "+" + valid[1:],
				"NUL byte":        valid[:20] + "\x00" + valid[21:],
				"trailing NUL":    valid[:42] + "\x00",
				"space":           " " + valid[1:],
				"padding":         valid[:42] + "=",
				"non-canonical":   nonCanonical,
				"UTF-8":           "é" + valid[2:],
				"newline":         valid[:42] + "\n",
				"percent-encoded": "%41" + valid[3:],
			}
			before := roundTrips(e)
			for name, id := range malformed {
				_, err := e.store.Lookup(t.Context(), id)
				wantCode(t, "Lookup("+name+")", err, reason.SessionMalformed)
				_, err = e.store.Get(t.Context(), id)
				wantCode(t, "Get("+name+")", err, reason.SessionMalformed)
				wantCode(t, "Revoke("+name+")", e.store.Revoke(t.Context(), id), reason.SessionMalformed)
			}
			if after := roundTrips(e); after != before {
				t.Fatalf("Redis round trips for malformed IDs = %d; want 0", after-before)
			}
			mustLookup(t, e, valid)
		},
	},
	{
		name: "unknown well-formed ID → session_not_found",
		check: func(t *testing.T, e *env) {
			id, _ := newID()
			_, err := e.store.Lookup(t.Context(), id)
			wantCode(t, "Lookup(unknown)", err, reason.SessionNotFound)
			wantCode(t, "Revoke(unknown)", e.store.Revoke(t.Context(), id), reason.SessionNotFound)
		},
	},
	{
		name: "invalid new sessions → ErrInvalid, nothing stored",
		check: func(t *testing.T, e *env) {
			tooMany := map[string]string{}
			for i := range MaxMetadataEntries + 1 {
				tooMany[string(rune('a'+i))] = "v"
			}
			bad := map[string]NewSession{
				"empty subject":          {},
				"subject too long":       {Subject: strings.Repeat("s", MaxSubjectBytes+1)},
				"subject not UTF-8":      {Subject: "\xff"},
				"subject with control":   {Subject: "a\nb"},
				"negative ttl":           {Subject: "a", TTL: -time.Second},
				"ttl beyond absolute":    {Subject: "a", TTL: 21 * e.u},
				"too many metadata":      {Subject: "a", Metadata: tooMany},
				"metadata value too big": {Subject: "a", Metadata: map[string]string{"k": strings.Repeat("v", MaxMetadataValueBytes+1)}},
				"empty metadata key":     {Subject: "a", Metadata: map[string]string{"": "v"}},
				"claims too big":         {Subject: "a", Claims: map[string]any{"x": strings.Repeat("c", MaxClaimsBytes)}},
				"claims not JSON":        {Subject: "a", Claims: map[string]any{"f": func() {}}},
				"claims NaN":             {Subject: "a", Claims: map[string]any{"n": math.NaN()}},
			}
			for name, ns := range bad {
				id, _, err := e.store.Create(t.Context(), ns)
				if !errors.Is(err, ErrInvalid) || id != "" {
					t.Errorf("Create(%s) = %q, %v; want ErrInvalid and no ID", name, id, err)
				}
			}
			if list, _ := e.store.ListSubject(t.Context(), "a"); len(list) != 0 {
				t.Fatalf("ListSubject(a) = %d sessions; want none", len(list))
			}
		},
	},
}

func flipLowBits(c byte) byte {
	// The 43rd character carries 4 data bits and 2 zero bits; setting a
	// zero bit gives a non-canonical spelling of the same bytes.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i^1]
}

func roundTrips(e *env) uint64 {
	if e.rs == nil {
		return 0
	}
	return e.rs.roundTrips()
}

// TestStoreBehaviour runs the same behavioural table against the memory
// store, Redis and a (one-node) Redis Cluster.
func TestStoreBehaviour(t *testing.T) {
	t.Parallel()
	for _, h := range harnesses() {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range storeCases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					cfg := tableConfig(h.u)
					if tc.cfg != nil {
						tc.cfg(&cfg)
					}
					e := h.open(t, cfg, withExpiredGrace(3*h.u))
					tc.check(t, e)
				})
			}
		})
	}
}
