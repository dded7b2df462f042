package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metricOpts names a metric caddy_sdr_<name>, beside Caddy's own.
func metricOpts(name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: "caddy", Subsystem: "sdr", Name: name, Help: help}
}

// registerMetrics registers the process-wide collectors into a config's
// registry (a new one on every load); one registered already is kept. It
// returns the other errors, joined.
func registerMetrics(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
