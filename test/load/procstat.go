package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. The
// kernel ABI fixes it at 100 on every architecture Go supports, whatever
// CONFIG_HZ is, and Go has no sysconf(_SC_CLK_TCK) to ask. At 10 ms per tick
// a 10 s run at one busy core is measured to 0.1%.
const clockTicks = 100

// procCPU returns the user+system CPU time consumed so far by every thread
// of process pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	utime, stime, err := parseProcStat(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// parseProcStat extracts utime and stime (fields 14 and 15, in clock ticks)
// from a /proc/PID/stat line. The command name (field 2) is in parentheses
// and may itself contain spaces and ')', so fields are counted from the last
// ')'.
func parseProcStat(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("no ')' after comm")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field N is f[N-3].
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("only %d fields after comm", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return utime, stime, nil
}

// memSample is one reading of a process's resident set.
type memSample struct {
	At  time.Duration // since the scenario started
	RSS int64         // bytes, VmRSS
	HWM int64         // bytes, VmHWM: the kernel's own peak, which catches spikes between samples
}

// procMem reads VmRSS and VmHWM from /proc/PID/status.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStatus(b)
}

func parseProcStatus(b []byte) (rss, hwm int64, err error) {
	var gotRSS, gotHWM bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: unexpected value %q", key, val)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", key, err)
		}
		if key == "VmRSS" {
			rss, gotRSS = kb<<10, true
		} else {
			hwm, gotHWM = kb<<10, true
		}
	}
	if !gotRSS || !gotHWM {
		return 0, 0, errors.New("VmRSS or VmHWM missing (kernel thread or exited process?)")
	}
	return rss, hwm, nil
}

// selfCPU is this process's own user+system CPU time, reported next to the
// server's so a reader can see how much of the two shared cores the load
// generator itself took.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// mallocsMetric is the cumulative heap allocation count exported by
// client_golang's Go collector.
const mallocsMetric = "go_memstats_mallocs_total"

// redisRTMetric is Tollgate's count of session-store Redis round trips,
// one series per operation.
const redisRTMetric = "tollgate_session_redis_round_trips_total"

// serverCounters are the counters read from one scrape of /metrics.
type serverCounters struct {
	Mallocs float64
	// RedisRT sums redisRTMetric over its series; HaveRT is false when
	// the server exports none (no Redis session store).
	RedisRT float64
	HaveRT  bool
}

// scrapeCounters fetches a Prometheus text exposition and reads
// serverCounters from it.
func scrapeCounters(ctx context.Context, hc *http.Client, url string) (serverCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return serverCounters{}, err
	}
	// Ask for the text format explicitly; newer servers may otherwise
	// negotiate protobuf or OpenMetrics.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return serverCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return serverCounters{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	c, err := parseCounters(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return serverCounters{}, fmt.Errorf("GET %s: %w", url, err)
	}
	return c, nil
}

// parseCounters reads the unlabelled go_memstats_mallocs_total (required)
// and the sum of every tollgate_session_redis_round_trips_total series. A
// line scan is enough for two counters and avoids depending on the
// exposition-format parser.
func parseCounters(r io.Reader) (serverCounters, error) {
	var c serverCounters
	haveMallocs := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, mallocsMetric); ok && !haveMallocs {
			if v, ok, err := sampleValue(rest, false); err != nil {
				return c, fmt.Errorf("%s: %w", mallocsMetric, err)
			} else if ok {
				c.Mallocs, haveMallocs = v, true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(line, redisRTMetric); ok {
			if v, ok, err := sampleValue(rest, true); err != nil {
				return c, fmt.Errorf("%s: %w", redisRTMetric, err)
			} else if ok {
				c.RedisRT += v
				c.HaveRT = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !haveMallocs {
		return c, fmt.Errorf("metric %s not found", mallocsMetric)
	}
	return c, nil
}

// sampleValue parses what follows a metric name on a sample line: optional
// labels (only when labelled is true), then the value. ok is false when
// the line is another metric that shares the prefix, or a labelled series
// where an unlabelled one is wanted.
func sampleValue(rest string, labelled bool) (v float64, ok bool, err error) {
	switch {
	case strings.HasPrefix(rest, "{"):
		if !labelled {
			return 0, false, nil
		}
		i := strings.LastIndexByte(rest, '}')
		if i < 0 {
			return 0, false, errors.New("unterminated labels")
		}
		rest = rest[i+1:]
	case rest != "" && rest[0] != ' ':
		return 0, false, nil // a longer metric name with this prefix
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(f[0], 64)
	return v, err == nil, err
}
