package stream

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sdr_whep [<matcher>] [<name>] {
//	    name             <name>
//	    source           shm <path> [<size>] | encoder <stream> | nats <subject>
//	    max_gop_bytes    <size>
//	    idr_coalesce     <duration>
//	    allowed_origins  [<origin...>|*]  # trusted to command; none: own host and loopback
//	    allowed_hosts    [<host...>|*]    # besides IPs, localhost, single-label, *.local, ...
//	    # the WebRTC options, as in sdr_stream's webrtc block:
//	    ice_server       <url> [<username> <credential>]
//	    udp_ports        <min>-<max>
//	    nat_1to1         <ip...>
//	    udp_mux          [<host>]:<port>
//	    include_loopback [<bool>]
//	    max_sessions     <n>
//	    control_rate     <per second>
//	    command_rate     <per second>
//	}
//
// The handler answers POST (a new session) on its path and DELETE on the
// Location it returned, so match it with a wildcard: `sdr_whep /whep*`.
// ice_server may be given more than once.
func (w *WHEP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if err := sdrcaddyfile.DirectiveArg(d, &w.Name, "the stream name"); err != nil {
		return err
	}
	cfg, rtcSet := &RTCConfig{}, false
	if err := sdrcaddyfile.EachSubdirective(d, "subdirective", func(sub string) error {
		args := sdrcaddyfile.ReadArgs(d)
		switch sub {
		case "name":
			if w.Name != "" {
				return d.Errf("stream name given twice (%q and name)", w.Name)
			}
			v, err := args.One()
			if err != nil {
				return err
			}
			w.Name = v
		case "source":
			src, err := parseStreamSource(d, args.Values())
			if err != nil {
				return err
			}
			w.Source = src
		case "max_gop_bytes":
			n, err := args.Size()
			if err != nil {
				return err
			}
			w.MaxGOPBytes = int(n)
		case "idr_coalesce":
			dur, err := args.Millis()
			if err != nil {
				return err
			}
			w.IDRCoalesce = dur
		default:
			if ok, err := w.UnmarshalTrust(args); ok {
				return err
			}
			if err := parseRTCOption(d, args, cfg); err != nil {
				return err
			}
			rtcSet = true
		}
		return nil
	}, "ice_server"); err != nil {
		return err
	}
	if rtcSet {
		w.WebRTC = cfg
	}
	return nil
}

// parseRTCBlock reads a `webrtc { ... }` block (sdr_stream's subdirective)
// whose name token has been read and whose arguments are args.
func parseRTCBlock(d *caddyfile.Dispenser, args sdrcaddyfile.Args) (*RTCConfig, error) {
	if args.Len() != 0 {
		return nil, d.Errf("webrtc takes no arguments, got %d (options go in its block)", args.Len())
	}
	cfg := &RTCConfig{}
	if err := sdrcaddyfile.EachSubdirective(d, "webrtc option", func(string) error {
		return parseRTCOption(d, sdrcaddyfile.ReadArgs(d), cfg)
	}, "ice_server"); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseRTCOption reads one WebRTC option, whose arguments are args, into
// cfg.
func parseRTCOption(d *caddyfile.Dispenser, args sdrcaddyfile.Args, cfg *RTCConfig) error {
	switch sub := args.Name(); sub {
	case "ice_server":
		v := args.Values()
		if len(v) != 1 && len(v) != 3 {
			return d.Errf("ice_server takes a url and optionally a username and credential, got %d arguments", len(v))
		}
		s := RTCICEServer{URLs: []string{v[0]}}
		if len(v) == 3 {
			s.Username, s.Credential = v[1], v[2]
		}
		cfg.ICEServers = append(cfg.ICEServers, s)
	case "udp_ports":
		v, err := args.One()
		if err != nil {
			return err
		}
		lo, hi, ok := strings.Cut(v, "-")
		lo1, err1 := strconv.Atoi(lo)
		hi1, err2 := strconv.Atoi(hi)
		if !ok || err1 != nil || err2 != nil || lo1 < 1 || hi1 > 65535 || lo1 > hi1 {
			return d.Errf("udp_ports %q: want <min>-<max> within 1-65535", v)
		}
		cfg.UDPPortMin, cfg.UDPPortMax = lo1, hi1
	case "nat_1to1":
		ips, err := args.Some()
		if err != nil {
			return err
		}
		cfg.NAT1To1IPs = ips
	case "udp_mux":
		v, err := args.One()
		if err != nil {
			return err
		}
		if _, _, err := rtcSplitMux(v); err != nil {
			return d.Errf("%v", err)
		}
		cfg.UDPMux = v
	case "include_loopback":
		b := true
		if args.Len() > 0 {
			var err error
			if b, err = args.Bool(); err != nil {
				return err
			}
		}
		cfg.IncludeLoopback = b
	case "max_sessions":
		n, err := args.WholeNumber()
		if err != nil {
			return err
		}
		cfg.MaxSessions = n
	case "control_rate", "command_rate":
		v, err := args.One()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 10000 {
			return d.Errf("%s %q: want messages per second, above 0 and at most 10000", sub, v)
		}
		if sub == "control_rate" {
			cfg.ControlRate = f
		} else {
			cfg.CommandRate = f
		}
	default:
		return d.Errf("unknown subdirective %q", sub)
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*WHEP)(nil)
