// Package sdrmetrics names the sdr modules' Prometheus collectors and
// registers them into each config's registry. The collectors themselves are
// created once per process by the package that owns them, so that counters
// keep counting across config reloads.
package sdrmetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Opts names a metric caddy_sdr_<name>, beside Caddy's own.
func Opts(name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: "caddy", Subsystem: "sdr", Name: name, Help: help}
}

// Register registers the process-wide collectors into a config's
// registry (a new one on every load); one registered already is kept. It
// returns the other errors, joined.
func Register(reg *prometheus.Registry, cs ...prometheus.Collector) error {
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
