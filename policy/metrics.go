package policy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
)

// metrics are the engine's Prometheus metrics. None is touched by Eval.
type metrics struct {
	reloads     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	downloads   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
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
	if err := promreg.RegisterAll(reg, m.reloads, m.lastSuccess, m.downloads); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return m, nil
}
