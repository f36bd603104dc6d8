package authz

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
	"github.com/tollgate-dev/tollgate/internal/reason"
)

const (
	resultAllowed = "allowed"
	resultDenied  = "denied"
	resultError   = "error"
)

// metrics holds the Check counters. Label lookups are cached per
// (result, reason) so the hot path does not hash label values.
type metrics struct {
	checks   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	counters sync.Map // key{result, code} → prometheus.Counter
	allowed  prometheus.Observer
	denied   prometheus.Observer
	errored  prometheus.Observer
}

type counterKey struct {
	result string
	code   reason.Code
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_checks_total",
			Help: "Checks by result (allowed, denied, error) and reason code.",
		}, []string{"result", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_check_duration_seconds",
			Help:    "Time to decide a Check inside Tollgate, by result.",
			Buckets: []float64{.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"result"}),
	}
	if err := promreg.RegisterAll(reg, m.checks, m.duration); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	m.allowed = m.duration.WithLabelValues(resultAllowed)
	m.denied = m.duration.WithLabelValues(resultDenied)
	m.errored = m.duration.WithLabelValues(resultError)
	return m, nil
}

func (m *metrics) observe(result string, code reason.Code, d time.Duration) {
	k := counterKey{result, code}
	c, ok := m.counters.Load(k)
	if !ok {
		c, _ = m.counters.LoadOrStore(k, m.checks.WithLabelValues(result, string(code)))
	}
	c.(prometheus.Counter).Inc()
	switch result {
	case resultAllowed:
		m.allowed.Observe(d.Seconds())
	case resultDenied:
		m.denied.Observe(d.Seconds())
	default:
		m.errored.Observe(d.Seconds())
	}
}
