// Package promreg registers a component's Prometheus collectors as one
// unit: all of them or none, so a component whose construction fails
// leaves the registry as it found it (and can be built again, e.g. in
// tests or on a retried start-up).
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterAll registers every collector with r, or, if any fails,
// unregisters those it registered and returns the joined errors. A nil r
// registers nothing.
func RegisterAll(r prometheus.Registerer, collectors ...prometheus.Collector) error {
	if r == nil {
		return nil
	}
	var errs []error
	registered := make([]prometheus.Collector, 0, len(collectors))
	for _, c := range collectors {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
			continue
		}
		registered = append(registered, c)
	}
	if err := errors.Join(errs...); err != nil {
		for _, c := range registered {
			r.Unregister(c)
		}
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}
