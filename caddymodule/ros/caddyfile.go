package ros

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/internal/origin"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sdr_ros", sdrcaddyfile.ParseHandler[ROS])
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
	if err := sdrcaddyfile.DirectiveArg(d, &r.Upstream, "the upstream"); err != nil {
		return err
	}
	if err := sdrcaddyfile.EachSubdirective(d, "subdirective", func(sub string) error {
		args := sdrcaddyfile.ReadArgs(d)
		var err error
		switch sub {
		case "upstream":
			if r.Upstream != "" {
				return d.Errf("upstream given twice")
			}
			r.Upstream, err = args.One()
		case "subscribe":
			r.SubscribeTopics, err = args.Some()
		case "publish":
			r.PublishTopics, err = args.Some()
		case "services":
			r.Services, err = args.Some()
		case "latched_topics":
			r.LatchedTopics, err = args.Some()
		case "motion_topics":
			r.MotionTopics, err = args.Some()
		case "gate_stream":
			r.GateStream, err = args.One()
		case "stop_message":
			var v string
			if v, err = args.One(); err == nil {
				r.StopMessage = json.RawMessage(v)
			}
		case "allow_motion_without_gate":
			if err := args.None(); err != nil {
				return err
			}
			r.AllowMotionWithoutGate = true
		case "service_timeout":
			var v string
			if v, err = args.One(); err == nil {
				var dur time.Duration
				if dur, err = caddy.ParseDuration(v); err != nil {
					return d.Errf("service_timeout %q: %v", v, err)
				}
				r.ServiceTimeout = caddy.Duration(dur)
			}
		case "service_connections", "client_queue":
			var n int
			if n, err = args.PositiveInt(); err == nil {
				if sub == "service_connections" {
					r.ServiceConnections = n
				} else {
					r.ClientQueue = n
				}
			}
		case "max_message_size":
			var n int64
			if n, err = args.Size(); err == nil {
				if n == 0 {
					return d.Errf("max_message_size %q: want a size above 0, such as 1MiB", args.Values()[0])
				}
				r.MaxMessageSize = n
			}
		case "rate_limit":
			vals := args.Values()
			if len(vals) < 1 || len(vals) > 2 {
				return d.Errf("rate_limit takes <ops-per-second>|off [<burst>], got %d arguments", len(vals))
			}
			if vals[0] == "off" {
				if len(vals) == 2 {
					return d.Errf("rate_limit off takes no burst, got %q", vals[1])
				}
				r.RateLimit = -1
				break
			}
			f, perr := strconv.ParseFloat(vals[0], 64)
			if perr != nil || f <= 0 {
				return d.Errf("rate_limit %q: want a positive number of ops per second, or off", vals[0])
			}
			r.RateLimit = f
			if len(vals) == 2 {
				b, perr := strconv.Atoi(vals[1])
				if perr != nil || b <= 0 {
					return d.Errf("rate_limit burst %q: want a positive integer", vals[1])
				}
				r.RateBurst = b
			}
		case "origins":
			// No value (an empty {$SDR_ALLOWED_ORIGINS}): none listed.
			for _, a := range args.Values() {
				if err := origin.Validate(a); err != nil {
					return d.Err(err.Error())
				}
			}
			r.Origins = args.Values()
		case "hosts":
			r.Hosts, err = sdrcaddyfile.ParseHosts(d, args.Values())
		case "reconnect":
			vals := args.Values()
			if len(vals) != 2 {
				return d.Errf("reconnect takes <min> <max>, got %d arguments", len(vals))
			}
			lo, err1 := caddy.ParseDuration(vals[0])
			hi, err2 := caddy.ParseDuration(vals[1])
			if err1 != nil || err2 != nil || lo <= 0 || hi < lo {
				return d.Errf("reconnect %q %q: want two durations, min <= max", vals[0], vals[1])
			}
			r.ReconnectMin, r.ReconnectMax = caddy.Duration(lo), caddy.Duration(hi)
		default:
			if ok, lerr := r.UnmarshalLimit(args); ok {
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
