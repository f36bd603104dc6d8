package keyscli

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

var kidRE = regexp.MustCompile(`(?m)^([A-Za-z0-9_-]{43})\s+(\S+)\s+(\S+)`)

// table parses the printed table into kid → state.
func table(out string) map[string]string {
	m := map[string]string{}
	for _, r := range kidRE.FindAllStringSubmatch(out, -1) {
		m[r[1]] = r[3]
	}
	return m
}

func stateKIDs(tab map[string]string, state string) []string {
	var kids []string
	for k, s := range tab {
		if s == state {
			kids = append(kids, k)
		}
	}
	return kids
}

// exercise runs rotate, rotate again after publish-ahead, list and revoke
// against one store.
func exercise(t *testing.T, store ...string) {
	t.Helper()
	sched := []string{"--publish-ahead", "1s"}
	args := func(cmd string, extra ...string) []string {
		return append(append(append([]string{cmd}, store...), sched...), extra...)
	}
	code, out, errs := run(t, args("list")...)
	if code != 0 || len(table(out)) != 0 || !strings.Contains(out, "KID") {
		t.Fatalf("list on an empty store = %d %q %q; want an empty table", code, out, errs)
	}
	code, out, errs = run(t, args("rotate")...)
	if code != 0 || !strings.Contains(out, "becomes active at") {
		t.Fatalf("rotate = %d %q %q", code, out, errs)
	}
	tab := table(out)
	if len(stateKIDs(tab, "active")) != 1 || len(stateKIDs(tab, "next")) != 1 {
		t.Fatalf("after first rotate: %v; want one active and one next key", tab)
	}
	next := stateKIDs(tab, "next")[0]
	time.Sleep(1100 * time.Millisecond)
	code, out, errs = run(t, args("rotate")...)
	if code != 0 || !strings.Contains(out, "key "+next+" is now active") {
		t.Fatalf("second rotate = %d %q %q; want %s active", code, out, errs, next)
	}
	code, out, _ = run(t, args("list")...)
	tab = table(out)
	if code != 0 || tab[next] != "active" || len(stateKIDs(tab, "retiring")) != 1 {
		t.Fatalf("list = %v; want %s active and one retiring", tab, next)
	}
	code, out, errs = run(t, args("revoke", next)...)
	tab = table(out)
	if code != 0 || tab[next] != "revoked" || len(stateKIDs(tab, "active")) != 1 {
		t.Fatalf("revoke = %d %v %q; want %s revoked and a fresh active key", code, tab, errs, next)
	}
	if code, _, errs := run(t, args("revoke", strings.Repeat("A", 43))...); code != 1 || !strings.Contains(errs, "unknown key") {
		t.Errorf("revoke unknown = %d %q; want 1 and unknown key", code, errs)
	}
}

func TestFileStore(t *testing.T) {
	t.Parallel()
	exercise(t, "--store", "file", "--dir", filepath.Join(t.TempDir(), "keys"))
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	kek := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	exercise(t, "--store", "redis", "--redis-addr", addr, "--kek-file", kek)
}

func TestUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no command → usage", nil, 2, "usage:"},
		{"unknown command → usage", []string{"frobnicate"}, 2, "unknown command"},
		{"help → 0", []string{"help"}, 0, ""},
		{"revoke without KID → usage", []string{"revoke", "--store", "file", "--dir", dir}, 2, "want 1 argument"},
		{"list with extra argument → usage", []string{"list", "x", "--store", "file", "--dir", dir}, 2, "want 0 argument"},
		{"no store → error", []string{"list"}, 1, "--store is required"},
		{"unknown store → error", []string{"list", "--store", "s3"}, 1, `--store "s3"`},
		{"file without dir → error", []string{"list", "--store", "file"}, 1, "--dir is required"},
		{"redis without KEK → error", []string{"list", "--store", "redis", "--redis-addr", "127.0.0.1:1"}, 1, "kek_file or kek_env is required"},
		{"pkcs11 without settings → error", []string{"list", "--store", "pkcs11"}, 1, "module is required"},
		{"bad flag → usage", []string{"list", "--nope"}, 2, "flag provided but not defined"},
		{"invalid schedule → usage", []string{"list", "--store", "file", "--dir", dir, "--ttl", "2h"}, 2, "grace_period"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errs, tc.wantErr) {
				t.Errorf("Run(%q) = %d, %q; want %d and %q", tc.args, code, errs, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// startRedis runs a private redis-server on a free loopback port and
// stops it at cleanup; a missing redis-server fails the test.
func startRedis(t *testing.T) string {
	t.Helper()
	bin := "/usr/bin/redis-server"
	if p, err := exec.LookPath("redis-server"); err == nil {
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("redis-server is required: %v", err)
	}
	dir := t.TempDir()
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
		up := false
		for deadline := time.Now().Add(5 * time.Second); !up && time.Now().Before(deadline); {
			select {
			case <-exited:
				deadline = time.Now()
				continue
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			up = c.Ping(ctx).Err() == nil
			cancel()
			if !up {
				time.Sleep(20 * time.Millisecond)
			}
		}
		c.Close()
		stop := func() { _ = cmd.Process.Kill(); <-exited }
		if up {
			t.Cleanup(stop)
			return addr
		}
		stop()
	}
	t.Fatal("redis-server did not start")
	return ""
}

func TestKIDStartingWithDashIsPositional(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("store", "", "")
	for _, tt := range []struct {
		arg  string
		want bool
	}{
		{"-knavoGh0EJ9QHhmJPv5Epv9PWLjaeY3YuMCwmC_ZYs", true},
		{"--store", false},
		{"--store=file", false},
		{"-store", false},
		{"--", false},
		{"abc", false},
	} {
		if got := isUndefinedFlag(fs, tt.arg); got != tt.want {
			t.Errorf("isUndefinedFlag(%q) = %v; want %v", tt.arg, got, tt.want)
		}
	}
}
