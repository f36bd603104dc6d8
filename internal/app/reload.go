package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// reloader is one named step of a SIGHUP reload.
type reloader struct {
	name  string
	apply func(context.Context) error
}

// reloaders lists, in order, what a SIGHUP reloads. Policies are the only
// part that changes without a restart today; listeners, issuers and
// stores are fixed for the life of the process.
func (a *App) reloaders() []reloader {
	var rs []reloader
	if a.policy != nil {
		rs = append(rs, reloader{"policy", a.policy.Reload})
	}
	return rs
}

// Reload runs every reload step, each independently: a failure keeps that
// part's previous state serving and is reported, not fatal.
func (a *App) Reload(ctx context.Context) error {
	var errs []error
	for _, r := range a.reloaders() {
		err := r.apply(ctx)
		result := "success"
		if err != nil {
			result = "failure"
			errs = append(errs, fmt.Errorf("reload %s: %w", r.name, err))
			a.log.Error("reload failed; the previous version keeps serving", "part", r.name, "error", err)
		} else {
			a.log.Info("reloaded", "part", r.name)
		}
		a.reloads.WithLabelValues(r.name, result).Inc()
	}
	return errors.Join(errs...)
}

func newReloadMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_sighup_reloads_total",
		Help: "SIGHUP reload steps by part and result.",
	}, []string{"part", "result"})
	reg.MustRegister(c)
	return c
}
