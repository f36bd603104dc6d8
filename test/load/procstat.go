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

// scrapeMallocs fetches a Prometheus text exposition and returns
// go_memstats_mallocs_total. A line scan is enough for one unlabelled
// counter and avoids depending on the exposition-format parser.
func scrapeMallocs(ctx context.Context, hc *http.Client, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	// Ask for the text format explicitly; newer servers may otherwise
	// negotiate protobuf or OpenMetrics.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	v, err := findMetric(io.LimitReader(resp.Body, 16<<20), mallocsMetric)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	return v, nil
}

func findMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ') {
			continue // a comment, another metric with this prefix, or a labelled series
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		return strconv.ParseFloat(f[0], 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not found", name)
}
