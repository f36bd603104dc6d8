package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// buildTollgate compiles cmd/tollgate with -tags vtprotobuf, as `make
// build` does.
func buildTollgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tollgate")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "vtprotobuf", "-o", bin, "../../cmd/tollgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tollgate: %v\n%s", err, out)
	}
	return bin
}

// TestEveryRowEndToEnd runs the orchestrator as `make bench-load` does,
// with every server row but tiny phases: real Tollgate processes with the
// generated configs, a real redis-server, sessions created through the
// admin API, the memory phase, the report and the JSON. run fails on any
// error or denial, so passing means every row measured its allow path.
func TestEveryRowEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("server cost accounting reads /proc")
	}
	if testing.Short() {
		t.Skip("builds tollgate and starts seven processes")
	}
	tollgate, null := buildTollgate(t), buildNullauthz(t)
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&stderr, nil))
	err := run(ctx, []string{
		"-tollgate", tollgate, "-null", null, "-workdir", filepath.Join(dir, "work"),
		"-duration", "400ms", "-warmup", "100ms", "-rounds", "1",
		"-concurrency", "4", "-rate", "300", "-fixed-workers", "8", "-call-timeout", "2s",
		"-tokens", "16", "-sessions", "16",
		"-memory-duration", "600ms", "-memory-tokens", "40", "-memory-rate", "200", "-memory-interval", "200ms",
		"-json", jsonPath,
	}, &stdout, &stderr, logger)
	if err != nil {
		t.Fatalf("run() error = %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	var out struct {
		Rows []struct {
			Server  string   `json:"server"`
			Mode    string   `json:"mode"`
			Checks  int64    `json:"checks"`
			RT      *float64 `json:"redis_round_trips_per_check"`
			Cmds    *float64 `json:"redis_commands_per_check"`
			XFloor  *float64 `json:"cpu_x_floor"`
			CPUPerC *float64 `json:"server_cpu_us_per_check"`
		} `json:"rows"`
		Memory *struct {
			Server string `json:"server"`
			Checks int64  `json:"checks"`
		} `json:"memory"`
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	seen := map[string]int{}
	for _, r := range out.Rows {
		seen[r.Server]++
		if r.Checks == 0 {
			t.Errorf("%s %s: 0 checks", r.Server, r.Mode)
		}
		if r.XFloor == nil || r.CPUPerC == nil {
			t.Errorf("%s %s: CPU ×floor %v, CPU %v; want both", r.Server, r.Mode, r.XFloor, r.CPUPerC)
		}
		switch r.Server {
		case rowSession:
			// One EVALSHA per lookup: Tollgate's count and Redis's must
			// agree on that, and Redis also counts the script's HMGET.
			if r.RT == nil || *r.RT < 0.95 || *r.RT > 1.05 {
				t.Errorf("%s %s: redis RT/Check = %v; want ≈1 (no local cache)", r.Server, r.Mode, deref(r.RT))
			}
			if r.Cmds == nil || *r.Cmds < 1.9 {
				t.Errorf("%s %s: redis cmds/Check = %v; want ≥ 2 (EVALSHA and its HMGET)", r.Server, r.Mode, deref(r.Cmds))
			}
		case rowSessionCache:
			if r.RT == nil || *r.RT >= 0.95 {
				t.Errorf("%s %s: redis RT/Check = %v; want < 0.95 with the local cache (16 sessions, 1s TTL)", r.Server, r.Mode, deref(r.RT))
			}
		default:
			if r.RT != nil || r.Cmds != nil {
				t.Errorf("%s %s: redis RT %v cmds %v; want none for a row without Redis", r.Server, r.Mode, deref(r.RT), deref(r.Cmds))
			}
		}
	}
	for _, name := range allRows {
		if seen[name] != 2 {
			t.Errorf("rows for %s = %d; want 2 (closed and fixed)", name, seen[name])
		}
	}
	if out.Memory == nil || out.Memory.Server != rowTollgate || out.Memory.Checks == 0 {
		t.Errorf("memory = %+v; want a memory phase against %s", out.Memory, rowTollgate)
	}
	table := stdout.String()
	for _, col := range []string{"CPU ×floor", "redis RT/Check", "redis cmds/Check", "redis CPU µs/Check", "VmRSS MiB"} {
		if !strings.Contains(table, col) {
			t.Errorf("report lacks column %q:\n%s", col, table)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", table, stderr.String())
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
