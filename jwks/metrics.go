package jwks

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
)

// metrics holds the Verifier's instruments. Every method is a no-op on a
// nil *metrics, which is what a Verifier without WithRegisterer has.
type metrics struct {
	fetches   *prometheus.CounterVec
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
}

const (
	fetchSuccess = "success"
	fetchError   = "error"
)

var (
	descKeySetAge = prometheus.NewDesc("tollgate_jwks_key_set_age_seconds",
		"Seconds since the issuer's key set was last fetched successfully. Absent until the first success.",
		[]string{"issuer"}, nil)
	descKeys = prometheus.NewDesc("tollgate_jwks_keys",
		"Usable verification keys in the issuer's current key set.",
		[]string{"issuer"}, nil)
	descCacheEntries = prometheus.NewDesc("tollgate_token_cache_entries",
		"Verified tokens held in the token cache.", nil, nil)
)

func newMetrics(v *Verifier, r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_jwks_fetches_total",
		Help: "Key set fetches by issuer and result (success, error).",
	}, []string{"issuer", "result"})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_token_cache_requests_total",
		Help: "Verified-token cache lookups by result (hit, miss).",
	}, []string{"result"})
	for _, is := range v.issuers {
		if is.remote {
			fetches.WithLabelValues(is.cfg.Issuer, fetchSuccess)
			fetches.WithLabelValues(is.cfg.Issuer, fetchError)
		}
	}
	m := &metrics{
		fetches:   fetches,
		cacheHit:  cache.WithLabelValues("hit"),
		cacheMiss: cache.WithLabelValues("miss"),
	}
	if err := promreg.RegisterAll(r, fetches, cache, (*stateCollector)(v)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) hit() {
	if m != nil {
		m.cacheHit.Inc()
	}
}

func (m *metrics) miss() {
	if m != nil {
		m.cacheMiss.Inc()
	}
}

func (m *metrics) fetched(issuer, result string) {
	if m != nil {
		m.fetches.WithLabelValues(issuer, result).Inc()
	}
}

// stateCollector reports gauges computed from the Verifier's state at
// scrape time, so the request path pays nothing for them.
type stateCollector Verifier

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKeySetAge
	ch <- descKeys
	ch <- descCacheEntries
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	v := (*Verifier)(c)
	now := v.now()
	// Label values are valid UTF-8 (New checks issuers), so NewConstMetric
	// cannot fail; should it, the sample is dropped rather than panicking
	// in the scrape.
	gauge := func(d *prometheus.Desc, val float64, labels ...string) {
		if m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, val, labels...); err == nil {
			ch <- m
		}
	}
	for _, is := range v.issuers {
		if !is.remote {
			continue
		}
		ks := is.keys.Load()
		if ks == nil {
			gauge(descKeys, 0, is.cfg.Issuer)
			continue
		}
		gauge(descKeySetAge, now.Sub(ks.fetchedAt).Seconds(), is.cfg.Issuer)
		gauge(descKeys, float64(len(ks.all)), is.cfg.Issuer)
	}
	gauge(descCacheEntries, float64(v.cache.len()))
}
