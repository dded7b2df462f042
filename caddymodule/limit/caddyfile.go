package limit

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

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
	return sdrcaddyfile.EachSubdirective(d, "subdirective", func(sub string) error {
		var dst *int
		switch sub {
		case "max_connections":
			dst = &c.MaxConnections
		case "reserve":
			dst = &c.Reserve
		default:
			return d.Errf("unknown subdirective %q", sub)
		}
		v, err := sdrcaddyfile.ReadArgs(d).One()
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return d.Errf("%s %q: want a positive whole number", sub, v)
		}
		*dst = n
		return nil
	})
}

// Interface guard
var _ caddyfile.Unmarshaler = (*ConnLimit)(nil)
