package keyring

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gather returns the registry's samples as "name{label=value,...}" → value.
func gather(t *testing.T, r *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				out[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[name+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cfg := baseConfig()
	cfg.PublishAhead = time.Second
	clock := newFakeClock()
	k := startKeyring(t, cfg, newFileStore(t), WithRegisterer(reg), WithClock(clock.Now))
	ctx := t.Context()
	req := MintRequest{CacheKey: "c", Audience: "svc"}
	for range 3 {
		if _, err := k.Mint(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = k.Mint(ctx, MintRequest{Audience: "*"})
	if _, err := k.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, err := k.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Revoke(ctx, k.ActiveKID()); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	want := map[string]float64{
		"tollgate_keyring_mints_total{result=signed}":                      1,
		"tollgate_keyring_mints_total{result=reused}":                      2,
		"tollgate_keyring_mints_total{result=error}":                       1,
		"tollgate_keyring_mint_cache_requests_total{result=hit}":           2,
		"tollgate_keyring_mint_cache_requests_total{result=miss}":          1,
		"tollgate_keyring_signing_duration_seconds{algorithm=ES256}_count": 1,
		"tollgate_keyring_rotations_total":                                 1,
		"tollgate_keyring_revocations_total":                               1,
		"tollgate_keyring_keys{state=active}":                              1,
		"tollgate_keyring_keys{state=retiring}":                            1,
		"tollgate_keyring_keys{state=revoked}":                             1,
		"tollgate_keyring_keys{state=next}":                                0,
		"tollgate_keyring_mint_cache_entries":                              0,
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %v (present %v); want %v", name, g, ok, w)
		}
	}
	if _, err := New(cfg, newFileStore(t), WithRegisterer(reg)); err == nil {
		t.Error("New registering the same metrics twice = nil error; want a registration error")
	}
}
