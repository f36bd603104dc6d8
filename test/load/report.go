package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"text/tabwriter"
	"time"
)

// floorName is the row every other server's CPU is compared with.
const floorName = "null-proto"

// printTable writes the main results table. The floor ratio compares each
// row's server CPU per Check with null-proto's in the same mode of the same
// run, which cancels most machine noise and CPU-model differences.
func printTable(w io.Writer, rows []runResult) error {
	floor := floorCPU(rows)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tmode\tChecks/s\tp50\tp90\tp99\tmax\terrors\tnon-OK\tsrv CPU µs/Check\tallocs/Check\tCPU ×floor\tredis RT/Check\tredis cmds/Check\tredis CPU µs/Check\tclient CPU µs/Check\t")
	for _, r := range rows {
		l := r.Load
		ratio := ratioToFloor(floor, r)
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Server, r.Spec, l.rate(),
			fmtLatency(l.Hist.quantile(0.50)), fmtLatency(l.Hist.quantile(0.90)),
			fmtLatency(l.Hist.quantile(0.99)), fmtLatency(time.Duration(l.Hist.max)),
			l.Errors, l.NonOK,
			fmtFloat(r.ServerCPUPerCheck(), 1), fmtFloat(r.AllocsPerCheck(), 1),
			fmtFloat(ratio, 2),
			fmtFloat(r.RedisRTPerCheck(), 3), fmtFloat(r.RedisCallsPerCheck(), 3), fmtFloat(r.RedisCPUPerCheck(), 1),
			fmtFloat(r.ClientCPUPerCheck(), 1))
	}
	return tw.Flush()
}

// floorCPU is the floor's server CPU µs per Check by phase.
func floorCPU(rows []runResult) map[string]float64 {
	floor := map[string]float64{}
	for _, r := range rows {
		if r.Server == floorName {
			floor[r.Spec.String()] = r.ServerCPUPerCheck()
		}
	}
	return floor
}

// ratioToFloor is r's server CPU per Check over the floor's in the same
// phase, NaN when either is unknown.
func ratioToFloor(floor map[string]float64, r runResult) float64 {
	if f, ok := floor[r.Spec.String()]; ok && f > 0 {
		return r.ServerCPUPerCheck() / f
	}
	return math.NaN()
}

// printMemory writes the memory scenario's samples and maxima.
func printMemory(w io.Writer, m *memResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "memory: %s, %d distinct tokens, %v, %d checks (%.0f/s), errors %d, non-OK %d\n",
		m.Server, m.Tokens, m.Spec, m.Load.Checks, m.Load.rate(), m.Load.Errors, m.Load.NonOK)
	fmt.Fprintln(tw, "t\tVmRSS MiB\tVmHWM MiB\t")
	for _, s := range m.Samples {
		fmt.Fprintf(tw, "%.0fs\t%.1f\t%.1f\t\n", s.At.Seconds(), mib(s.RSS), mib(s.HWM))
	}
	fmt.Fprintf(tw, "max\t%.1f\t%.1f\t\n", mib(m.MaxRSS), mib(m.PeakHWM))
	return tw.Flush()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtFloat(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// jsonRow is the machine-readable form of one table row; unknown values
// are null.
type jsonRow struct {
	Server         string   `json:"server"`
	Mode           string   `json:"mode"`
	Checks         int64    `json:"checks"`
	ChecksPerSec   float64  `json:"checks_per_sec"`
	P50us          float64  `json:"p50_us"`
	P90us          float64  `json:"p90_us"`
	P99us          float64  `json:"p99_us"`
	MaxUs          float64  `json:"max_us"`
	SendLagP99us   *float64 `json:"send_lag_p99_us,omitempty"`
	Errors         int64    `json:"errors"`
	NonOK          int64    `json:"non_ok"`
	ServerCPUusPer *float64 `json:"server_cpu_us_per_check"`
	AllocsPer      *float64 `json:"allocs_per_check"`
	CPUxFloor      *float64 `json:"cpu_x_floor"`
	ClientCPUusPer *float64 `json:"client_cpu_us_per_check"`
	// Redis figures are omitted for rows that use no Redis.
	RedisRTPer    *float64           `json:"redis_round_trips_per_check,omitempty"`
	RedisCallsPer *float64           `json:"redis_commands_per_check,omitempty"`
	RedisCallsBy  map[string]float64 `json:"redis_commands_per_check_by_command,omitempty"`
	RedisCPUusPer *float64           `json:"redis_cpu_us_per_check,omitempty"`
}

type jsonMemory struct {
	Server  string      `json:"server"`
	Tokens  int         `json:"tokens"`
	Mode    string      `json:"mode"`
	Checks  int64       `json:"checks"`
	Errors  int64       `json:"errors"`
	NonOK   int64       `json:"non_ok"`
	Samples []jsonMemPt `json:"samples"`
	MaxRSS  int64       `json:"max_rss_bytes"`
	PeakHWM int64       `json:"peak_hwm_bytes"`
}

type jsonMemPt struct {
	AtSec float64 `json:"at_sec"`
	RSS   int64   `json:"rss_bytes"`
	HWM   int64   `json:"hwm_bytes"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// writeJSON saves the results for later comparison between commits.
func writeJSON(path string, rows []runResult, mem *memResult) error {
	out := struct {
		When   time.Time   `json:"when"`
		Rows   []jsonRow   `json:"rows"`
		Memory *jsonMemory `json:"memory,omitempty"`
	}{When: time.Now().UTC()}
	floor := floorCPU(rows)
	for _, r := range rows {
		l := r.Load
		out.Rows = append(out.Rows, jsonRow{
			Server: r.Server, Mode: r.Spec.String(), Checks: l.Checks, ChecksPerSec: l.rate(),
			P50us: us(l.Hist.quantile(0.5)), P90us: us(l.Hist.quantile(0.9)), P99us: us(l.Hist.quantile(0.99)),
			MaxUs: us(time.Duration(l.Hist.max)), Errors: l.Errors, NonOK: l.NonOK,
			ServerCPUusPer: finite(r.ServerCPUPerCheck()), AllocsPer: finite(r.AllocsPerCheck()),
			CPUxFloor:      finite(ratioToFloor(floor, r)),
			ClientCPUusPer: finite(r.ClientCPUPerCheck()),
			RedisRTPer:     finite(r.RedisRTPerCheck()),
			RedisCallsPer:  finite(r.RedisCallsPerCheck()),
			RedisCPUusPer:  finite(r.RedisCPUPerCheck()),
		})
		if r.HaveRedis && len(r.Redis.ByCmd) > 0 {
			by := map[string]float64{}
			for k, v := range r.Redis.ByCmd {
				by[k] = r.perCheck(v)
			}
			out.Rows[len(out.Rows)-1].RedisCallsBy = by
		}
		if r.Spec.Mode == modeFixed && l.Lag != nil {
			out.Rows[len(out.Rows)-1].SendLagP99us = finite(us(l.Lag.quantile(0.99)))
		}
	}
	if mem != nil && mem.Load != nil {
		jm := &jsonMemory{Server: mem.Server, Tokens: mem.Tokens, Mode: mem.Spec.String(), Checks: mem.Load.Checks,
			Errors: mem.Load.Errors, NonOK: mem.Load.NonOK, MaxRSS: mem.MaxRSS, PeakHWM: mem.PeakHWM}
		for _, s := range mem.Samples {
			jm.Samples = append(jm.Samples, jsonMemPt{AtSec: s.At.Seconds(), RSS: s.RSS, HWM: s.HWM})
		}
		out.Memory = jm
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
