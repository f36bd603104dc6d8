package main

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"
)

func TestParseCommandStats(t *testing.T) {
	t.Parallel()
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=41250,usec=300000,usec_per_call=7.27,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_hmget:calls=41250,usec=40000,usec_per_call=0.97,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=4,usec=3,usec_per_call=0.75,rejected_calls=0,failed_calls=0\r\n"
	got, err := parseCommandStats(info)
	want := map[string]uint64{"evalsha": 41250, "hmget": 41250, "client|setinfo": 4}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("parseCommandStats() = %v, %v; want %v, nil", got, err, want)
	}
	if _, err := parseCommandStats("cmdstat_get:usec=3\r\n"); err == nil {
		t.Errorf("parseCommandStats(no calls=) error = nil; want error")
	}
}

// The probe must count exactly what clients made Redis do between two
// snapshots, its own INFO excluded, and commands run inside a Lua script
// counted as Redis counts them (one per call), next to the script itself.
func TestRedisProbeCountsOtherClientsCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	r, err := startRedis(ctx, defaultRedisServer, dir, filepath.Join(dir, "redis.log"), 10*time.Second)
	if err != nil {
		t.Fatalf("startRedis() error = %v", err)
	}
	defer func() {
		if err := r.stop(); err != nil {
			t.Errorf("redis stop() error = %v", err)
		}
	}()
	probe := &redisProbe{Addr: r.Addr, PID: r.PID}
	defer probe.close()
	client := &redisProbe{Addr: r.Addr} // stands in for Tollgate
	defer client.close()

	s0, err := probe.snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot() error = %v", err)
	}
	for range 3 {
		if _, err := client.do(ctx, "EVAL", "redis.call('SET', KEYS[1], '1'); return redis.call('GET', KEYS[1])", "1", "k"); err != nil {
			t.Fatalf("EVAL error = %v", err)
		}
	}
	if _, err := client.do(ctx, "PING"); err != nil {
		t.Fatalf("PING error = %v", err)
	}
	s1, err := probe.snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot() error = %v", err)
	}
	d := s0.delta(s1)
	want := map[string]float64{"eval": 3, "set": 3, "get": 3, "ping": 1}
	if !maps.Equal(d.ByCmd, want) || d.Calls != 10 {
		t.Errorf("delta = %v (total %v); want %v (total 10)", d.ByCmd, d.Calls, want)
	}
	if !d.HasCPU || d.CPU < 0 {
		t.Errorf("delta CPU = %v, %v; want a known, non-negative CPU time", d.CPU, d.HasCPU)
	}
}

func TestStartRedisMissingBinaryFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := startRedis(t.Context(), filepath.Join(dir, "no-such-redis-server"), dir, filepath.Join(dir, "redis.log"), time.Second)
	if err == nil {
		t.Fatalf("startRedis(missing binary) error = nil; want an error")
	}
}
