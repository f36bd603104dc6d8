package session

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
	"github.com/tollgate-dev/tollgate/internal/reason"
)

// metrics holds a store's instruments. Every method is a no-op on a nil
// *metrics, which is what a store without WithRegisterer has.
type metrics struct {
	lookups       *prometheus.CounterVec
	lookupByCode  map[reason.Code]prometheus.Counter
	storeErrors   *prometheus.CounterVec
	roundTrips    map[string]prometheus.Counter
	storeErrs     map[string]prometheus.Counter
	cacheHit      prometheus.Counter
	cacheMiss     prometheus.Counter
	invalidations prometheus.Counter
	refreshes     prometheus.Counter
	evictions     prometheus.Counter
}

// gauges are read at scrape time; nil funcs are not registered.
type gauges struct {
	breakerState func() float64
	cacheActive  func() float64
}

// Operation labels.
const (
	opCreate        = "create"
	opLookup        = "lookup"
	opGet           = "get"
	opRevoke        = "revoke"
	opRevokeSubject = "revoke_subject"
	opList          = "list"
	opStart         = "start"
)

var allOps = []string{opCreate, opLookup, opGet, opRevoke, opRevokeSubject, opList, opStart}

var lookupCodes = []reason.Code{
	reason.OK, reason.SessionMalformed, reason.SessionNotFound,
	reason.SessionExpired, reason.SessionStoreUnavailable,
}

func newMetrics(r prometheus.Registerer, store string, g gauges) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	constLabels := prometheus.Labels{"store": store}
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_session_lookups_total", ConstLabels: constLabels,
			Help: "Session lookups by result (ok or a reason code).",
		}, []string{"result"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_session_store_errors_total", ConstLabels: constLabels,
			Help: "Failed store calls by operation (breaker rejections excluded).",
		}, []string{"op"}),
		refreshes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_session_idle_refreshes_total", ConstLabels: constLabels,
			Help: "Writes that slid a session's idle expiry.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_session_evictions_total", ConstLabels: constLabels,
			Help: "Sessions revoked because their subject exceeded max_per_subject.",
		}),
		invalidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_session_cache_invalidations_total", ConstLabels: constLabels,
			Help: "Invalidation messages received over pub/sub.",
		}),
	}
	roundTrips := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_session_redis_round_trips_total", ConstLabels: constLabels,
		Help: "Redis round trips (commands, scripts or pipelines) by operation.",
	}, []string{"op"})
	m.roundTrips = make(map[string]prometheus.Counter, len(allOps))
	m.storeErrs = make(map[string]prometheus.Counter, len(allOps))
	for _, op := range allOps {
		m.roundTrips[op] = roundTrips.WithLabelValues(op)
		m.storeErrs[op] = m.storeErrors.WithLabelValues(op)
	}
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_session_cache_requests_total", ConstLabels: constLabels,
		Help: "Local session cache lookups by result (hit, miss).",
	}, []string{"result"})
	m.cacheHit = cache.WithLabelValues("hit")
	m.cacheMiss = cache.WithLabelValues("miss")
	m.lookupByCode = make(map[reason.Code]prometheus.Counter, len(lookupCodes))
	for _, c := range lookupCodes {
		m.lookupByCode[c] = m.lookups.WithLabelValues(string(c))
	}
	collectors := []prometheus.Collector{m.lookups, m.storeErrors, m.refreshes, m.evictions}
	if store == string(StoreRedis) {
		collectors = append(collectors, roundTrips, cache, m.invalidations)
	}
	if g.breakerState != nil {
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_session_breaker_state", ConstLabels: constLabels,
			Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, g.breakerState))
	}
	if g.cacheActive != nil {
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_session_cache_active", ConstLabels: constLabels,
			Help: "1 while the local cache is in use (invalidation subscription confirmed).",
		}, g.cacheActive))
	}
	if err := promreg.RegisterAll(r, collectors...); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return m, nil
}

func (m *metrics) lookup(err error) {
	if m == nil {
		return
	}
	if c, ok := m.lookupByCode[reason.Of(err)]; ok {
		c.Inc()
		return
	}
	m.lookups.WithLabelValues(string(reason.Of(err))).Inc()
}

func (m *metrics) storeError(op string) {
	if m == nil {
		return
	}
	if c, ok := m.storeErrs[op]; ok {
		c.Inc()
		return
	}
	m.storeErrors.WithLabelValues(op).Inc()
}

func (m *metrics) roundTrip(op string, n int) {
	if m == nil {
		return
	}
	if c, ok := m.roundTrips[op]; ok {
		c.Add(float64(n))
	}
}

func (m *metrics) cache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheHit.Inc()
	} else {
		m.cacheMiss.Inc()
	}
}

func (m *metrics) refreshed() {
	if m != nil {
		m.refreshes.Inc()
	}
}

func (m *metrics) evicted(n int) {
	if m != nil && n > 0 {
		m.evictions.Add(float64(n))
	}
}

func (m *metrics) invalidated() {
	if m != nil {
		m.invalidations.Inc()
	}
}
