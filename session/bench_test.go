package session

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// benchStores returns the stores the lookup benchmarks compare: memory,
// Redis without and with the local cache (same shared redis-server).
func benchStores(b *testing.B) []struct {
	name  string
	store Store
	rs    *RedisStore
} {
	b.Helper()
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	mem, err := NewMemory(Config{}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	mk := func(cache bool) *RedisStore {
		s, err := NewRedis(Config{Store: StoreRedis, Cache: CacheConfig{Enabled: cache},
			Redis: RedisConfig{Addrs: []string{sharedRedis.addr}, KeyPrefix: uniquePrefix()}}, quiet)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Stop(context.Background()) })
		return s
	}
	plain, cached := mk(false), mk(true)
	return []struct {
		name  string
		store Store
		rs    *RedisStore
	}{{"memory", mem, nil}, {"redis", plain, plain}, {"redis+cache", cached, cached}}
}

func BenchmarkLookup(b *testing.B) {
	for _, bs := range benchStores(b) {
		id, _, err := recordingStore{bs.store}.Create(context.Background(), NewSession{
			Subject: "alice", Claims: map[string]any{"roles": []string{"admin", "dev"}, "tenant": "t1"},
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(bs.name, func(b *testing.B) {
			b.ReportAllocs()
			var rt0 uint64
			if bs.rs != nil {
				rt0 = bs.rs.roundTrips()
			}
			for b.Loop() {
				if _, err := bs.store.Lookup(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			if bs.rs != nil {
				b.ReportMetric(float64(bs.rs.roundTrips()-rt0)/float64(b.N), "roundtrips/op")
			}
		})
		b.Run(bs.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			var rt0 uint64
			if bs.rs != nil {
				rt0 = bs.rs.roundTrips()
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bs.store.Lookup(ctx, id); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if bs.rs != nil {
				b.ReportMetric(float64(bs.rs.roundTrips()-rt0)/float64(b.N), "roundtrips/op")
			}
		})
	}
}

func TestRedisCachedLookupDoesNotAllocate(t *testing.T) {
	s, err := NewRedis(Config{Store: StoreRedis, Cache: CacheConfig{Enabled: true},
		Redis: RedisConfig{Addrs: []string{sharedRedis.addr}, KeyPrefix: uniquePrefix(), Timeout: time.Second}},
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	startStop(t, s)
	id, _ := create(t, s, "alice")
	if _, err := s.Lookup(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if n := testing.AllocsPerRun(200, func() {
		if _, err := s.Lookup(ctx, id); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("cached Lookup allocates %v times; want 0", n)
	}
}
