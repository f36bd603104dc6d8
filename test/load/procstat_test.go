package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		line         string
		utime, stime uint64
		wantErr      bool
	}{
		{
			name:  "plain comm",
			line:  "1234 (nullauthz) S 1 1234 1234 0 -1 4194560 2914 0 0 0 157 42 0 0 20 0 9 0 12345 1265664000 4096 18446744073709551615",
			utime: 157, stime: 42,
		},
		{
			name:  "comm with spaces and parens is skipped by the last ')'",
			line:  "99 (tg (x) y) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 1 1",
			utime: 7, stime: 3,
		},
		{name: "truncated line → error", line: "1 (x) S 1 2 3", wantErr: true},
		{name: "no comm → error", line: "garbage", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, s, err := parseProcStat([]byte(tt.line))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseProcStat() error = %v; want error %v", err, tt.wantErr)
			}
			if u != tt.utime || s != tt.stime {
				t.Errorf("parseProcStat() = %d, %d; want %d, %d", u, s, tt.utime, tt.stime)
			}
		})
	}
}

func TestOwnProcessCounters(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Errorf("procCPU(self) error = %v", err)
	}
	rss, hwm, err := procMem(os.Getpid())
	if err != nil || rss <= 0 || hwm < rss {
		t.Errorf("procMem(self) = %d, %d, %v; want 0 < rss ≤ hwm", rss, hwm, err)
	}
	if c, err := selfCPU(); err != nil || c < 0 || c > time.Hour {
		t.Errorf("selfCPU() = %v, %v; want a small positive duration", c, err)
	}
}

func TestParseProcStatus(t *testing.T) {
	t.Parallel()
	in := "Name:\ttollgate\nVmPeak:\t  900000 kB\nVmHWM:\t   52000 kB\nVmRSS:\t   48000 kB\nThreads:\t9\n"
	rss, hwm, err := parseProcStatus([]byte(in))
	if err != nil || rss != 48000<<10 || hwm != 52000<<10 {
		t.Errorf("parseProcStatus() = %d, %d, %v; want %d, %d, nil", rss, hwm, err, 48000<<10, 52000<<10)
	}
	if _, _, err := parseProcStatus([]byte("Name:\tkthreadd\n")); err == nil {
		t.Errorf("parseProcStatus(no Vm lines) error = nil; want error")
	}
}

func TestParseCounters(t *testing.T) {
	t.Parallel()
	exposition := `# HELP go_memstats_mallocs_total Total number of heap objects allocated.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total_other 1
go_memstats_mallocs_total{shard="a"} 2
go_memstats_mallocs_total 1.234567e+06
# TYPE tollgate_session_redis_round_trips_total counter
tollgate_session_redis_round_trips_total{op="create",store="redis"} 3000
tollgate_session_redis_round_trips_total{op="lookup",store="redis"} 41250
tollgate_session_redis_round_trips_total_bogus 7
`
	got, err := parseCounters(strings.NewReader(exposition))
	want := serverCounters{Mallocs: 1234567, RedisRT: 44250, HaveRT: true}
	if err != nil || got != want {
		t.Errorf("parseCounters() = %+v, %v; want %+v, nil", got, err, want)
	}
	got, err = parseCounters(strings.NewReader("go_memstats_mallocs_total 5\n"))
	if want := (serverCounters{Mallocs: 5}); err != nil || got != want {
		t.Errorf("parseCounters(no Redis series) = %+v, %v; want %+v, nil", got, err, want)
	}
	if _, err := parseCounters(strings.NewReader("up 1\n")); err == nil {
		t.Errorf("parseCounters(no mallocs) error = nil; want error")
	}
}
