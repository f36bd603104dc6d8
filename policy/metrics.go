package policy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
)

// metrics are the engine's Prometheus metrics. Eval only counts cache
// hits and misses.
type metrics struct {
	reloads     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	downloads   *prometheus.CounterVec
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	cacheSize   prometheus.GaugeFunc
}

// newMetrics creates the metrics; cached counts the decisions cached by
// the serving policy.
func newMetrics(reg prometheus.Registerer, cached func() float64) (*metrics, error) {
	m := &metrics{
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_policy_decision_cache_hits_total",
			Help: "Decisions answered from the decision cache without evaluating the policy.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_policy_decision_cache_misses_total",
			Help: "Decisions of a cacheable query that had to be evaluated.",
		}),
		cacheSize: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_policy_decision_cache_entries",
			Help: "Decisions cached for the serving policy (the cache starts empty at each load).",
		}, cached),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_policy_reloads_total",
			Help: "Policy loads (start-up, file change, bundle, SIGHUP) by result: success or failure. A failure leaves the previous policy serving.",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_policy_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last policy load that was swapped in.",
		}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_policy_bundle_downloads_total",
			Help: "Bundle polls by result: updated (200), not_modified (304) or failure (including signature verification).",
		}, []string{"result"}),
	}
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	if err := promreg.RegisterAll(reg, m.reloads, m.lastSuccess, m.downloads, m.cacheHits, m.cacheMisses, m.cacheSize); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return m, nil
}
