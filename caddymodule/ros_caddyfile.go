package caddymodule

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/sdr-os/sdr-caddy/internal/origin"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sdr_ros", parseHandler[ROS])
	// A terminal handler (it replaces reverse_proxy for /ros/*); ordered
	// before respond so that a fallback respond in the same block never
	// shadows it.
	httpcaddyfile.RegisterDirectiveOrder("sdr_ros", httpcaddyfile.Before, "respond")
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sdr_ros [<matcher>] [<upstream>] {
//	    upstream                  <ws-url>
//	    subscribe                 <glob...>
//	    publish                   <glob...>
//	    services                  <glob...>
//	    latched_topics            <glob...>
//	    motion_topics             <topic...>
//	    gate_stream               <name>
//	    stop_message              <json-object>
//	    allow_motion_without_gate
//	    service_timeout           <duration>
//	    service_connections       <n>
//	    client_queue              <n>
//	    max_message_size          <size>
//	    rate_limit                <ops-per-second>|off [<burst>]
//	    origins                   [<origin...>|*]
//	    hosts                     [<host...>|*]
//	    max_fragments             <n>
//	    frame_rate                <frames-per-second>|off [<burst>]
//	    ping_interval             <duration>|off
//	    reconnect                 <min> <max>
//	}
//
// Every subdirective may appear once.
func (r *ROS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if err := directiveArg(d, &r.Upstream, "the upstream"); err != nil {
		return err
	}
	if err := eachSubdirective(d, "subdirective", func(sub string) error {
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("%s takes one argument, got %d", sub, len(args))
			}
			return args[0], nil
		}
		some := func() ([]string, error) {
			if len(args) == 0 {
				return nil, d.Errf("%s needs at least one argument", sub)
			}
			return args, nil
		}
		var err error
		switch sub {
		case "upstream":
			if r.Upstream != "" {
				return d.Errf("upstream given twice")
			}
			r.Upstream, err = one()
		case "subscribe":
			r.SubscribeTopics, err = some()
		case "publish":
			r.PublishTopics, err = some()
		case "services":
			r.Services, err = some()
		case "latched_topics":
			r.LatchedTopics, err = some()
		case "motion_topics":
			r.MotionTopics, err = some()
		case "gate_stream":
			r.GateStream, err = one()
		case "stop_message":
			var v string
			if v, err = one(); err == nil {
				r.StopMessage = json.RawMessage(v)
			}
		case "allow_motion_without_gate":
			if len(args) != 0 {
				return d.Errf("allow_motion_without_gate takes no arguments, got %q", args[0])
			}
			r.AllowMotionWithoutGate = true
		case "service_timeout":
			var v string
			if v, err = one(); err == nil {
				var dur time.Duration
				if dur, err = caddy.ParseDuration(v); err != nil {
					return d.Errf("service_timeout %q: %v", v, err)
				}
				r.ServiceTimeout = caddy.Duration(dur)
			}
		case "service_connections", "client_queue":
			var v string
			if v, err = one(); err == nil {
				n, perr := strconv.Atoi(v)
				if perr != nil || n <= 0 {
					return d.Errf("%s %q: want a positive integer", sub, v)
				}
				if sub == "service_connections" {
					r.ServiceConnections = n
				} else {
					r.ClientQueue = n
				}
			}
		case "max_message_size":
			var v string
			if v, err = one(); err == nil {
				n, perr := humanize.ParseBytes(v)
				if perr != nil || n == 0 || n > 1<<40 {
					return d.Errf("max_message_size %q: want a size such as 1MiB", v)
				}
				r.MaxMessageSize = int64(n)
			}
		case "rate_limit":
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("rate_limit takes <ops-per-second>|off [<burst>], got %d arguments", len(args))
			}
			if args[0] == "off" {
				if len(args) == 2 {
					return d.Errf("rate_limit off takes no burst, got %q", args[1])
				}
				r.RateLimit = -1
				break
			}
			f, perr := strconv.ParseFloat(args[0], 64)
			if perr != nil || f <= 0 {
				return d.Errf("rate_limit %q: want a positive number of ops per second, or off", args[0])
			}
			r.RateLimit = f
			if len(args) == 2 {
				b, perr := strconv.Atoi(args[1])
				if perr != nil || b <= 0 {
					return d.Errf("rate_limit burst %q: want a positive integer", args[1])
				}
				r.RateBurst = b
			}
		case "origins":
			// No value (an empty {$SDR_ALLOWED_ORIGINS}): none listed.
			for _, a := range args {
				if err := origin.Validate(a); err != nil {
					return d.Err(err.Error())
				}
			}
			r.Origins = args
		case "hosts":
			r.Hosts, err = parseHosts(d, args)
		case "reconnect":
			if len(args) != 2 {
				return d.Errf("reconnect takes <min> <max>, got %d arguments", len(args))
			}
			lo, err1 := caddy.ParseDuration(args[0])
			hi, err2 := caddy.ParseDuration(args[1])
			if err1 != nil || err2 != nil || lo <= 0 || hi < lo {
				return d.Errf("reconnect %q %q: want two durations, min <= max", args[0], args[1])
			}
			r.ReconnectMin, r.ReconnectMax = caddy.Duration(lo), caddy.Duration(hi)
		default:
			if ok, lerr := r.unmarshalLimit(d, sub, args); ok {
				return lerr
			}
			return d.Errf("unknown subdirective %q", sub)
		}
		return err
	}); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*ROS)(nil)
