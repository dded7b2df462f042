package player

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sdr_player", sdrcaddyfile.ParseHandler[Player])
	// It hands the paths it does not own on, so it goes in front of the
	// terminal handlers (respond, reverse_proxy, file_server) of a route.
	httpcaddyfile.RegisterDirectiveOrder("sdr_player", httpcaddyfile.Before, "respond")
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sdr_player [<matcher>] {
//	    stream_url <path|ws-url>
//	}
func (p *Player) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("sdr_player takes no arguments, got %q", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "stream_url":
			if p.StreamURL != "" {
				return d.Errf("duplicate subdirective %q", d.Val())
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			p.StreamURL = d.Val()
			if d.NextArg() {
				return d.Errf("stream_url takes one argument, got %q", d.Val())
			}
			if err := validStreamURL(p.StreamURL); err != nil {
				return d.Err(err.Error())
			}
		default:
			return d.Errf("unknown subdirective %q", d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Player)(nil)
