package keyring

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/promreg"
)

// Mint results, the "result" label of tollgate_keyring_mints_total.
const (
	mintSigned = "signed" // a new token was signed
	mintReused = "reused" // a cached token was returned
	mintError  = "error"
)

// metrics holds the Keyring's instruments. Every method is a no-op on a
// nil *metrics, which is what a Keyring without WithRegisterer has.
type metrics struct {
	mints       map[string]prometheus.Counter
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	signing     map[Algorithm]prometheus.Observer
	rotations   prometheus.Counter
	revocations prometheus.Counter
	storeErrors *prometheus.CounterVec
}

var descKeys = prometheus.NewDesc("tollgate_keyring_keys",
	"Keys in the store by state (next, active, retiring, revoked), as last loaded.",
	[]string{"state"}, nil)

var descCacheEntries = prometheus.NewDesc("tollgate_keyring_mint_cache_entries",
	"Minted tokens held for reuse.", nil, nil)

func newMetrics(k *Keyring, r prometheus.Registerer) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	mints := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_keyring_mints_total",
		Help: "Internal token mints by result (signed, reused, error).",
	}, []string{"result"})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_keyring_mint_cache_requests_total",
		Help: "Mint reuse-cache lookups by result (hit, miss).",
	}, []string{"result"})
	signing := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_keyring_signing_duration_seconds",
		Help:    "Time to sign one internal token, by algorithm.",
		Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
	}, []string{"algorithm"})
	rotations := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_keyring_rotations_total",
		Help: "Signing key rotations (next key promoted to active) performed by this process.",
	})
	revocations := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_keyring_revocations_total",
		Help: "Key revocations performed by this process.",
	})
	storeErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_keyring_store_errors_total",
		Help: "Failed key store operations by operation (load, update).",
	}, []string{"op"})
	m := &metrics{
		mints:       map[string]prometheus.Counter{},
		cacheHits:   cache.WithLabelValues("hit"),
		cacheMisses: cache.WithLabelValues("miss"),
		signing:     map[Algorithm]prometheus.Observer{},
		rotations:   rotations,
		revocations: revocations,
		storeErrors: storeErrors,
	}
	for _, res := range []string{mintSigned, mintReused, mintError} {
		m.mints[res] = mints.WithLabelValues(res)
	}
	for _, a := range []Algorithm{ES256, RS256, EdDSA} {
		m.signing[a] = signing.WithLabelValues(string(a))
	}
	storeErrors.WithLabelValues("load")
	storeErrors.WithLabelValues("update")
	if err := promreg.RegisterAll(r, mints, cache, signing, rotations, revocations, storeErrors, (*stateCollector)(k)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) minted(result string) {
	if m != nil {
		m.mints[result].Inc()
	}
}

func (m *metrics) cacheHit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

func (m *metrics) cacheMiss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

func (m *metrics) signed(a Algorithm, d time.Duration) {
	if m != nil {
		if o := m.signing[a]; o != nil {
			o.Observe(d.Seconds())
		}
	}
}

func (m *metrics) rotated(n int) {
	if m != nil && n > 0 {
		m.rotations.Add(float64(n))
	}
}

func (m *metrics) revokedKey() {
	if m != nil {
		m.revocations.Inc()
	}
}

func (m *metrics) storeError(op string) {
	if m != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

// stateCollector reports gauges computed at scrape time.
type stateCollector Keyring

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKeys
	ch <- descCacheEntries
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	k := (*Keyring)(c)
	counts := map[State]int{StateNext: 0, StateActive: 0, StateRetiring: 0, StateRevoked: 0}
	if v := k.view.Load(); v != nil {
		for _, key := range v.keys {
			counts[key.State]++
		}
	}
	for _, s := range []State{StateNext, StateActive, StateRetiring, StateRevoked} {
		if m, err := prometheus.NewConstMetric(descKeys, prometheus.GaugeValue, float64(counts[s]), string(s)); err == nil {
			ch <- m
		}
	}
	n := 0
	if mc := k.cache.Load(); mc != nil {
		n = mc.len()
	}
	if m, err := prometheus.NewConstMetric(descCacheEntries, prometheus.GaugeValue, float64(n)); err == nil {
		ch <- m
	}
}
