package sdrcaddyfile

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// ClientLimits bound what one WebSocket client of sdr_stream, sdr_nats or
// sdr_ros may send, and find clients whose peer is gone. Each of the three
// embeds it, so that its fields sit beside the module's own in JSON.
type ClientLimits struct {
	// MaxFragments is the most frames one client message may come in; a
	// client that sends more is closed with code 1009. Browsers send each
	// message in one frame. Default: 64.
	MaxFragments int `json:"max_fragments,omitempty"`

	// FrameRate is the frames per second a client may send, sustained,
	// pings and pongs included; a client that sends faster, once its
	// FrameBurst is used up, is closed with code 1008. -1: no limit.
	// Default: 500.
	FrameRate float64 `json:"frame_rate,omitempty"`

	// FrameBurst is the frames a client may send at once. Default: 1000.
	FrameBurst int `json:"frame_burst,omitempty"`

	// PingInterval is how often each client is sent a WebSocket ping. A
	// client that has sent nothing (no pong, no message) since the
	// previous ping is closed (code 1001), so that a dead peer is dropped
	// within about two intervals, also while video still fills its socket
	// buffer. -1: no pings. Default: 20s.
	PingInterval caddy.Duration `json:"ping_interval,omitempty"`
}

// FrameLimits returns the limits for the wire package (zero: defaults).
func (l ClientLimits) FrameLimits() wire.FrameLimits {
	return wire.FrameLimits{MaxFragments: l.MaxFragments, Rate: l.FrameRate, Burst: l.FrameBurst}
}

// PingEvery returns the ping interval for the cores: 0 is their default,
// negative none.
func (l ClientLimits) PingEvery() time.Duration { return time.Duration(l.PingInterval) }

// ValidateLimits checks the limits as JSON may give them.
func (l ClientLimits) ValidateLimits() error {
	switch {
	case l.MaxFragments < 0:
		return fmt.Errorf("max_fragments %d is negative", l.MaxFragments)
	case l.FrameRate < 0 && l.FrameRate != -1:
		return fmt.Errorf("frame_rate %g: want a positive number of frames per second, or -1 for none", l.FrameRate)
	case l.FrameBurst < 0:
		return fmt.Errorf("frame_burst %d is negative", l.FrameBurst)
	case l.PingInterval < 0 && l.PingInterval != -1:
		return fmt.Errorf("ping_interval %s: want a positive duration, or -1 for none", time.Duration(l.PingInterval))
	}
	return nil
}

// UnmarshalLimit reads args if they belong to one of the subdirectives of
// ClientLimits, and reports whether they did:
//
//	max_fragments <n>
//	frame_rate    <frames-per-second>|off [<burst>]
//	ping_interval <duration>|off
//
// A ping_interval of 0 is off too.
func (l *ClientLimits) UnmarshalLimit(args Args) (bool, error) {
	d, vals := args.d, args.vals
	switch args.name {
	case "max_fragments":
		v, err := args.One()
		if err != nil {
			return true, err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return true, d.Errf("max_fragments %q: want a positive whole number", v)
		}
		l.MaxFragments = n
	case "frame_rate":
		if len(vals) < 1 || len(vals) > 2 {
			return true, d.Errf("frame_rate takes <frames-per-second>|off [<burst>], got %d arguments", len(vals))
		}
		if vals[0] == "off" {
			if len(vals) == 2 {
				return true, d.Errf("frame_rate off takes no burst, got %q", vals[1])
			}
			l.FrameRate = -1
			break
		}
		f, err := strconv.ParseFloat(vals[0], 64)
		if err != nil || f <= 0 {
			return true, d.Errf("frame_rate %q: want a positive number of frames per second, or off", vals[0])
		}
		l.FrameRate = f
		if len(vals) == 2 {
			b, err := strconv.Atoi(vals[1])
			if err != nil || b <= 0 {
				return true, d.Errf("frame_rate burst %q: want a positive whole number", vals[1])
			}
			l.FrameBurst = b
		}
	case "ping_interval":
		v, err := args.One()
		if err != nil {
			return true, err
		}
		dur, err := ParseOff(v, func(s string) (caddy.Duration, error) {
			dur, err := caddy.ParseDuration(s)
			if err == nil && dur < 0 {
				err = strconv.ErrRange
			}
			return caddy.Duration(dur), err
		})
		if err != nil {
			return true, d.Errf("ping_interval %q: want a duration (20s) or off", v)
		}
		l.PingInterval = dur
	default:
		return false, nil
	}
	return true, nil
}

// ParseHosts checks the arguments of a Host allowlist subdirective
// (allowed_hosts, hosts); none (an empty {$SDR_ALLOWED_HOSTS}) lists none.
func ParseHosts(d *caddyfile.Dispenser, hosts []string) ([]string, error) {
	for _, h := range hosts {
		if err := origin.ValidateHost(h); err != nil {
			return nil, d.Err(err.Error())
		}
	}
	return hosts, nil
}
