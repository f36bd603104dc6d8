package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterAllIsAllOrNothing(t *testing.T) {
	t.Parallel()
	r := prometheus.NewRegistry()
	taken := prometheus.NewCounter(prometheus.CounterOpts{Name: "taken_total", Help: "h"})
	r.MustRegister(taken)
	fresh := prometheus.NewCounter(prometheus.CounterOpts{Name: "fresh_total", Help: "h"})
	dup := prometheus.NewCounter(prometheus.CounterOpts{Name: "taken_total", Help: "h"})
	if err := RegisterAll(r, fresh, dup); err == nil {
		t.Fatal("RegisterAll(fresh, duplicate) = nil; want an error")
	}
	if err := r.Register(fresh); err != nil {
		t.Errorf("Register(fresh) after a failed RegisterAll = %v; want nil (rolled back)", err)
	}
	if err := RegisterAll(nil, dup); err != nil {
		t.Errorf("RegisterAll(nil registerer) = %v; want nil", err)
	}
}
