package caddymodule

import (
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/internal/connlimit"
)

func init() {
	caddy.RegisterModule(new(ConnLimit))
}

// processConns counts the connections of every listener that sdr_limit
// wraps, across servers and config reloads (listeners outlive a reload): a
// process has one descriptor limit.
var processConns = connlimit.New(0)

// ConnLimit is `caddy.listeners.sdr_limit`, a listener wrapper that caps the
// connections the process accepts below its file descriptor limit, so that
// a flood of idle connections cannot take the descriptors that the ring
// file's remap, NATS, rosbridge and new health checks need. At the cap a
// new connection takes the place of the oldest connection that has not
// sent a byte yet; when every open connection has, the new one is closed at
// once. The cap is process-wide: every server whose listeners it wraps
// shares it.
//
// It must come before `tls` in listener_wrappers, so that it counts TCP
// connections and the HTTP server still sees TLS ones:
//
//	servers {
//	    listener_wrappers {
//	        sdr_limit
//	        tls
//	    }
//	}
type ConnLimit struct {
	// MaxConnections is the most connections open at once. Default: the
	// process's descriptor limit (RLIMIT_NOFILE, which Go raises to its
	// hard limit at start) less Reserve.
	MaxConnections int `json:"max_connections,omitempty"`

	// Reserve is the descriptors kept from connections when
	// MaxConnections is not set. Default: an eighth of the limit, at
	// least 128.
	Reserve int `json:"reserve,omitempty"`

	log *zap.Logger
	max int // the cap Provision computed; 0: none
}

// CaddyModule returns the Caddy module information.
func (*ConnLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sdr_limit",
		New: func() caddy.Module { return new(ConnLimit) },
	}
}

// Provision computes the cap; WrapListener, when the server starts
// listening, sets it for the process (`caddy validate` changes nothing).
func (c *ConnLimit) Provision(ctx caddy.Context) error {
	c.log = ctx.Logger()
	if err := c.Validate(); err != nil {
		return err
	}
	limit, reserve, max := 0, c.Reserve, c.MaxConnections
	if max == 0 {
		var err error
		if limit, err = connlimit.FileLimit(); err != nil {
			c.log.Warn("no connection cap", zap.Error(err))
			return nil
		}
		if reserve == 0 {
			reserve = connlimit.Reserve(limit)
		}
		if max = limit - reserve; max < 1 {
			return fmt.Errorf("sdr_limit: a descriptor limit of %d leaves no connection after a reserve of %d", limit, reserve)
		}
	}
	c.max = max
	registerConnMetrics(ctx.GetMetricsRegistry(), c.log)
	c.log.Info("connection cap", zap.Int("max_connections", max), zap.Int("descriptor_limit", limit), zap.Int("reserve", reserve))
	return nil
}

// Validate checks the configuration.
func (c *ConnLimit) Validate() error {
	if c.MaxConnections < 0 || c.Reserve < 0 {
		return fmt.Errorf("sdr_limit: max_connections %d and reserve %d must not be negative", c.MaxConnections, c.Reserve)
	}
	return nil
}

// tlsListener is the type crypto/tls's listener has.
var tlsListener = reflect.TypeOf(tls.NewListener(nil, nil))

// WrapListener counts ln's connections against the process's cap. Behind a
// TLS listener (sdr_limit listed after tls) it would hide the TLS
// connections from the HTTP server; there it logs an error and wraps
// nothing.
func (c *ConnLimit) WrapListener(ln net.Listener) net.Listener {
	if reflect.TypeOf(ln) == tlsListener {
		c.log.Error("sdr_limit is listed after tls in listener_wrappers: list it before tls; this listener's connections are not capped",
			zap.String("address", ln.Addr().String()))
		return ln
	}
	processConns.SetMax(c.max)
	return processConns.Wrap(ln)
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens. Syntax:
//
//	sdr_limit {
//	    max_connections <n>
//	    reserve         <n>
//	}
func (c *ConnLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return eachSubdirective(d, "subdirective", func(sub string) error {
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.Errf("%s takes one argument, got %d", sub, len(args))
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 {
			return d.Errf("%s %q: want a positive whole number", sub, args[0])
		}
		switch sub {
		case "max_connections":
			c.MaxConnections = n
		case "reserve":
			c.Reserve = n
		default:
			return d.Errf("unknown subdirective %q", sub)
		}
		return nil
	})
}

// connCollector exposes the process's connection counts.
type connCollector struct{ open, max, silent, refused, evicted *prometheus.Desc }

var connMetrics = sync.OnceValue(func() *connCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", name), help, nil, nil)
	}
	return &connCollector{
		open:    desc("conns_open", "Connections open through the sdr_limit listener wrapper."),
		max:     desc("conns_max", "The cap on open connections (0: none)."),
		silent:  desc("conns_silent", "Open connections that have not sent a byte yet: the first closed at the cap."),
		refused: desc("conns_refused_total", "Connections closed at once at the cap, every open one having spoken."),
		evicted: desc("conns_evicted_total", "Connections that had not sent a byte, closed to make room for a new one at the cap."),
	}
})

func (m *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.open
	ch <- m.max
	ch <- m.silent
	ch <- m.refused
	ch <- m.evicted
}

func (m *connCollector) Collect(ch chan<- prometheus.Metric) {
	st := processConns.Stats()
	ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(m.max, prometheus.GaugeValue, float64(processConns.Max()))
	ch <- prometheus.MustNewConstMetric(m.silent, prometheus.GaugeValue, float64(st.Silent))
	ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(m.evicted, prometheus.CounterValue, float64(st.Evicted))
}

func registerConnMetrics(reg *prometheus.Registry, log *zap.Logger) {
	if err := registerMetrics(reg, connMetrics()); err != nil {
		log.Warn("registering sdr_limit metrics", zap.Error(err))
	}
}

// Interface guards
var (
	_ caddy.Provisioner     = (*ConnLimit)(nil)
	_ caddy.Validator       = (*ConnLimit)(nil)
	_ caddy.ListenerWrapper = (*ConnLimit)(nil)
	_ caddyfile.Unmarshaler = (*ConnLimit)(nil)
)
