// Package limit is the listener wrapper caddy.listeners.sdr_limit: the
// process-wide connection cap of internal/connlimit, below the process's
// file descriptor limit, with its Caddyfile syntax and its metrics.
package limit

import (
	"crypto/tls"
	"fmt"
	"net"
	"reflect"

	"github.com/caddyserver/caddy/v2"
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

// Interface guards
var (
	_ caddy.Provisioner     = (*ConnLimit)(nil)
	_ caddy.Validator       = (*ConnLimit)(nil)
	_ caddy.ListenerWrapper = (*ConnLimit)(nil)
)
