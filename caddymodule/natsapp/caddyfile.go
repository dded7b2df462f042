package natsapp

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/internal/lease"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("sdr_nats", parseNATSGlobalOption)
}

// parseNATSGlobalOption sets up the sdr_nats app from the global option
// block. Syntax (every subdirective optional):
//
//	sdr_nats {
//	    url <url...>                  # none: embedded server (commas also separate)
//	    name <connection name>
//	    credentials <file>
//	    nkey_seed <file>
//	    token <token>
//	    user <name> [<password>]
//	    tls {
//	        ca <file>
//	        cert <file>
//	        key <file>
//	        server_name <name>
//	        insecure_skip_verify
//	    }
//	    embedded {
//	        listen <host:port>        # default 127.0.0.1:4222
//	        server_name <name>
//	        jetstream [on|off]
//	        store_dir <dir>
//	        leaf_remote <url...> {
//	            credentials <file>
//	        }
//	    }
//	    reconnect_wait_max <duration>
//	    telemetry_subjects <pattern...>  # default telemetry.>
//	    telemetry_max_size <bytes>       # default 65536
//	    telemetry_max_subject <bytes>    # default 256
//	    telemetry_linger <duration>|off  # default 5ms
//	    actions <action...>
//	    command_rate <per second>|off [burst <n>]
//	    gate {
//	        hold <ms|duration>            # default 1000
//	        estop <ms|duration>           # default 5000
//	        codec_grace <ms|duration>|off # default 2000; 0 or off: none
//	    }
//	    control {
//	        lease [on|off]                # default off
//	        idle <duration>|off           # default 30s
//	        viewer_actions <action...>    # default force_idr list_policies
//	    }
//	}
//
// The old transport-server's environment variables fit as defaults, e.g.
// `url {$SDR_NATS_URL:}` (empty: embedded) or `hold {$SDR_VIDEO_GATE_HOLD_MS:1000}`.
func parseNATSGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("sdr_nats global option given more than once")
	}
	app := new(NATSApp)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "sdr_nats", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the sdr_nats global option block; see
// parseNATSGlobalOption for the syntax.
func (a *NATSApp) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	return sdrcaddyfile.EachSubdirective(d, "subdirective", func(key string) error {
		var err error
		switch key {
		case "url", "urls":
			a.URLs = natsSplitArgs(d.RemainingArgs())
		case "name":
			a.Name, err = sdrcaddyfile.ReadArgs(d).One()
		case "credentials":
			a.Credentials, err = sdrcaddyfile.ReadArgs(d).One()
		case "nkey_seed":
			a.NKeySeed, err = sdrcaddyfile.ReadArgs(d).One()
		case "token":
			a.Token, err = sdrcaddyfile.ReadArgs(d).One()
		case "user":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("user: want <name> [<password>], got %d arguments", len(args))
			}
			a.User = args[0]
			if len(args) == 2 {
				a.Password = args[1]
			}
		case "tls":
			a.TLS, err = natsParseTLS(d)
		case "embedded":
			a.Embedded, err = natsParseEmbedded(d)
		case "reconnect_wait_max":
			var v time.Duration
			v, err = natsDurationArg(d)
			a.ReconnectWaitMax = caddy.Duration(v)
		case "telemetry_subjects":
			a.TelemetrySubjects = natsSplitArgs(d.RemainingArgs())
			if len(a.TelemetrySubjects) == 0 {
				return d.ArgErr()
			}
		case "telemetry_max_size":
			a.TelemetryMaxSize, err = sdrcaddyfile.ReadArgs(d).PositiveInt()
		case "telemetry_max_subject":
			a.TelemetryMaxSubject, err = sdrcaddyfile.ReadArgs(d).PositiveInt()
		case "telemetry_linger":
			var s string
			if s, err = sdrcaddyfile.ReadArgs(d).One(); err == nil {
				var perr error
				a.TelemetryLinger, perr = sdrcaddyfile.ParseOff(s, func(s string) (caddy.Duration, error) {
					v, err := caddy.ParseDuration(s)
					if err == nil && (v < 0 || v > time.Second) {
						err = strconv.ErrRange
					}
					return caddy.Duration(v), err
				})
				if perr != nil {
					return d.Errf("telemetry_linger: %q is not off or a duration up to 1s", s)
				}
			}
		case "actions":
			a.Actions = natsSplitArgs(d.RemainingArgs())
			if len(a.Actions) == 0 {
				return d.ArgErr()
			}
		case "command_rate":
			err = a.parseCommandRate(d)
		case "gate":
			a.SafetyGate, err = natsParseGate(d)
		case "control":
			a.Control, err = natsParseControl(d)
		default:
			return d.Errf("unknown subdirective %q", key)
		}
		return err
	})
}

func (a *NATSApp) parseCommandRate(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 1 && len(args) != 3 {
		return d.Errf("command_rate: want <per second>|off [burst <n>], got %d arguments", len(args))
	}
	if args[0] == "off" {
		a.CommandRate = -1
	} else {
		r, err := strconv.ParseFloat(args[0], 64)
		if err != nil || r <= 0 {
			return d.Errf("command_rate: %q is not a positive number or off", args[0])
		}
		a.CommandRate = r
	}
	if len(args) == 3 {
		if args[1] != "burst" {
			return d.Errf("command_rate: unknown argument %q, want burst", args[1])
		}
		b, err := strconv.Atoi(args[2])
		if err != nil || b <= 0 {
			return d.Errf("command_rate: burst %q is not a positive integer", args[2])
		}
		a.CommandBurst = b
	}
	return nil
}

func natsParseTLS(d *caddyfile.Dispenser) (*NATSTLS, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := new(NATSTLS)
	if err := sdrcaddyfile.EachSubdirective(d, "tls subdirective", func(key string) error {
		var err error
		switch key {
		case "ca":
			t.CA, err = sdrcaddyfile.ReadArgs(d).One()
		case "cert":
			t.Cert, err = sdrcaddyfile.ReadArgs(d).One()
		case "key":
			t.Key, err = sdrcaddyfile.ReadArgs(d).One()
		case "server_name":
			t.ServerName, err = sdrcaddyfile.ReadArgs(d).One()
		case "insecure_skip_verify":
			if d.NextArg() {
				return d.ArgErr()
			}
			t.InsecureSkipVerify = true
		default:
			return d.Errf("unknown tls subdirective %q", key)
		}
		return err
	}); err != nil {
		return nil, err
	}
	return t, nil
}

func natsParseEmbedded(d *caddyfile.Dispenser) (*NATSEmbedded, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	e := new(NATSEmbedded)
	if err := sdrcaddyfile.EachSubdirective(d, "embedded subdirective", func(key string) error {
		var err error
		switch key {
		case "listen":
			e.Listen, err = sdrcaddyfile.ReadArgs(d).One()
		case "server_name":
			e.ServerName, err = sdrcaddyfile.ReadArgs(d).One()
		case "jetstream":
			e.JetStream = true
			if d.NextArg() {
				switch d.Val() {
				case "on":
				case "off":
					e.JetStream = false
				default:
					return d.Errf("jetstream: want on or off, got %q", d.Val())
				}
				if d.NextArg() {
					return d.ArgErr()
				}
			}
		case "store_dir":
			e.StoreDir, err = sdrcaddyfile.ReadArgs(d).One()
		case "leaf_remote":
			r := NATSLeafRemote{URLs: natsSplitArgs(d.RemainingArgs())}
			if len(r.URLs) == 0 {
				return d.Errf("leaf_remote: want at least one url")
			}
			for d.NextBlock(2) {
				switch d.Val() {
				case "credentials":
					if r.Credentials != "" {
						return d.Errf("duplicate leaf_remote subdirective %q", d.Val())
					}
					v, err := sdrcaddyfile.ReadArgs(d).One()
					if err != nil {
						return err
					}
					r.Credentials = v
				default:
					return d.Errf("unknown leaf_remote subdirective %q", d.Val())
				}
			}
			e.LeafRemotes = append(e.LeafRemotes, r)
		default:
			return d.Errf("unknown embedded subdirective %q", key)
		}
		return err
	}, "leaf_remote"); err != nil {
		return nil, err
	}
	return e, nil
}

func natsParseGate(d *caddyfile.Dispenser) (*NATSGate, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	g := new(NATSGate)
	if err := sdrcaddyfile.EachSubdirective(d, "gate subdirective", func(key string) error {
		var dst *caddy.Duration
		switch key {
		case "hold":
			dst = &g.Hold
		case "estop":
			dst = &g.Estop
		case "codec_grace":
			dst = &g.CodecGrace
		default:
			return d.Errf("unknown gate subdirective %q", key)
		}
		if key == "codec_grace" {
			// 0 is no grace, as SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS=0
			// was for the old transport-server (JSON: negative).
			s, err := sdrcaddyfile.ReadArgs(d).One()
			if err != nil {
				return err
			}
			v, err := sdrcaddyfile.ParseOff(s, sdrcaddyfile.ParseMillis)
			if err != nil {
				return d.Errf("codec_grace: %q is not off, a duration or a number of milliseconds", s)
			}
			*dst = v
			return nil
		}
		v, err := natsDurationArg(d)
		if err != nil {
			return err
		}
		*dst = caddy.Duration(v)
		return nil
	}); err != nil {
		return nil, err
	}
	return g, nil
}

func natsParseControl(d *caddyfile.Dispenser) (*NATSControl, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(NATSControl)
	if err := sdrcaddyfile.EachSubdirective(d, "control subdirective", func(key string) error {
		switch key {
		case "lease":
			args := d.RemainingArgs()
			c.Lease = len(args) == 0
			if len(args) > 0 {
				on, err := sdrcaddyfile.ParseBool(args[0])
				if err != nil || len(args) > 1 {
					return d.Errf("lease: want on or off, got %q", strings.Join(args, " "))
				}
				c.Lease = on
			}
		case "idle":
			s, err := sdrcaddyfile.ReadArgs(d).One()
			if err != nil {
				return err
			}
			v, err := sdrcaddyfile.ParseOff(s, func(s string) (caddy.Duration, error) {
				v, err := caddy.ParseDuration(s)
				if err == nil && v <= 0 {
					err = strconv.ErrRange
				}
				return caddy.Duration(v), err
			})
			if err != nil {
				return d.Errf("idle: %q is not off or a positive duration", s)
			}
			c.Idle = v
		case "viewer_actions":
			c.ViewerActions = natsSplitArgs(d.RemainingArgs())
			if len(c.ViewerActions) == 0 {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown control subdirective %q", key)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := (lease.Config{ViewerActions: c.ViewerActions}).Validate(); err != nil {
		return nil, d.Errf("control: %v", err)
	}
	return c, nil
}

// natsSplitArgs also splits arguments on commas, as the old environment
// variables listed values.
func natsSplitArgs(args []string) []string {
	var out []string
	for _, a := range args {
		for _, p := range strings.Split(a, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// natsDurationArg reads a duration; a bare integer is milliseconds, as in
// the old SDR_VIDEO_GATE_*_MS variables.
func natsDurationArg(d *caddyfile.Dispenser) (time.Duration, error) {
	key := d.Val()
	s, err := sdrcaddyfile.ReadArgs(d).One()
	if err != nil {
		return 0, err
	}
	v, err := sdrcaddyfile.ParseMillis(s)
	if err != nil || v <= 0 {
		return 0, d.Errf("%s: %q is not a positive duration or number of milliseconds", key, s)
	}
	return time.Duration(v), nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*NATSApp)(nil)
