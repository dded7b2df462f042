package stream

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

func init() {
	// Both are terminal handlers: each answers every request it gets
	// (sdr_stream a WebSocket or the health JSON), so they sit with
	// reverse_proxy and file_server. Each goes just before reverse_proxy
	// when it is registered: sdr_whep, then sdr_stream, in this order.
	httpcaddyfile.RegisterHandlerDirective("sdr_whep", sdrcaddyfile.ParseHandler[WHEP])
	httpcaddyfile.RegisterDirectiveOrder("sdr_whep", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("sdr_stream", sdrcaddyfile.ParseHandler[Stream])
	httpcaddyfile.RegisterDirectiveOrder("sdr_stream", httpcaddyfile.Before, "reverse_proxy")
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sdr_stream [<matcher>] [<name>] {
//	    name             <name>
//	    source           shm <path> [<size>] | encoder <stream> | nats <subject>
//	    publish          [<subject>]
//	    crc              <bool>
//	    keyframe_gating  <bool>
//	    max_frame_size   <size>
//	    idr_coalesce     <duration>
//	    idr_timeout      <duration>
//	    queue_depth      <frames>
//	    max_lag          <duration>|off
//	    max_gop_bytes    <size>
//	    join_max_age     <duration>
//	    join_max_replay  <duration>
//	    join_max_replay_bytes <size>
//	    max_clients      <n>
//	    max_message_size <size>
//	    write_timeout    <duration>
//	    send_queue       <size>|off
//	    telemetry_hold   <duration>|off
//	    allowed_origins  [<origin...>|*]  # trusted to command; none: own host and loopback
//	    allowed_hosts    [<host...>|*]    # Host names trusted to command besides IPs and LAN names
//	    max_fragments    <n>
//	    frame_rate       <frames-per-second>|off [<burst>]
//	    ping_interval    <duration>|off
//	    webrtc { ... }   (docs/webrtc.md)
//	}
//
// Booleans are true/false, on/off, yes/no or 1/0, so that the old
// environment variables fit: `crc {$SDR_CRC_ENABLED:true}`. Durations take
// a unit, or are milliseconds when they are a bare number:
// `idr_timeout {$SDR_IDR_TIMEOUT_MS:5000}`. Sizes are bytes or carry a unit
// (4MiB). `publish` puts the stream on a NATS subject (default
// video.<name>) for edges whose source is `nats <subject>`; both need the
// sdr_nats global option. keyframe_gating applies to shm and nats sources
// (on by default for nats), crc and max_frame_size to shm only.
func (s *Stream) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if err := sdrcaddyfile.DirectiveArg(d, &s.Name, "the stream name"); err != nil {
		return err
	}
	var crc, gating *bool
	var maxFrame int64
	if err := sdrcaddyfile.EachSubdirective(d, "subdirective", func(sub string) error {
		args := sdrcaddyfile.ReadArgs(d)
		switch sub {
		case "name":
			if s.Name != "" {
				return d.Errf("stream name given twice (%q and name)", s.Name)
			}
			v, err := args.One()
			if err != nil {
				return err
			}
			s.Name = v
		case "source":
			src, err := parseStreamSource(d, args.Values())
			if err != nil {
				return err
			}
			s.Source = src
		case "crc", "keyframe_gating":
			b, err := args.Bool()
			if err != nil {
				return err
			}
			if sub == "crc" {
				crc = &b
			} else {
				gating = &b
			}
		case "idr_coalesce", "idr_timeout", "write_timeout", "join_max_age", "join_max_replay":
			dur, err := args.Millis()
			if err != nil {
				return err
			}
			switch sub {
			case "idr_coalesce":
				s.IDRCoalesce = dur
			case "idr_timeout":
				s.IDRTimeout = dur
			case "join_max_age":
				s.JoinMaxAge = dur
			case "join_max_replay":
				s.JoinMaxReplay = dur
			default:
				s.WriteTimeout = dur
			}
		case "max_frame_size":
			v, err := args.One()
			if err != nil {
				return err
			}
			n, err := sdrcaddyfile.ParseSize(v)
			if err != nil || n == 0 || n > 1<<30 {
				return d.Errf("%s %q: want a size in bytes from 1 to 1GiB (33554432, 32MiB)", sub, v)
			}
			maxFrame = n
		case "send_queue":
			v, err := args.One()
			if err != nil {
				return err
			}
			if v == "off" {
				s.SendQueue = -1
				break
			}
			n, err := sdrcaddyfile.ParseSize(v)
			if err != nil {
				return d.Errf("%s %q: %v", sub, v, err)
			}
			s.SendQueue = int(n)
			if n == 0 {
				s.SendQueue = -1
			}
		case "max_lag":
			v, err := args.One()
			if err != nil {
				return err
			}
			if v == "off" {
				s.MaxLag = 0
				break
			}
			if s.MaxLag, err = sdrcaddyfile.ParseMillis(v); err != nil {
				return d.Errf("%s %q: %v", sub, v, err)
			}
		case "telemetry_hold":
			v, err := args.One()
			if err != nil {
				return err
			}
			if s.TelemetryHold, err = sdrcaddyfile.ParseOff(v, sdrcaddyfile.ParseMillis); err != nil {
				return d.Errf("%s %q: %v", sub, v, err)
			}
		case "queue_depth", "max_clients":
			n, err := args.WholeNumber()
			if err != nil {
				return err
			}
			if sub == "queue_depth" {
				s.QueueDepth = n
			} else {
				s.MaxClients = n
			}
		case "max_gop_bytes", "max_message_size", "join_max_replay_bytes":
			n, err := args.Size()
			if err != nil {
				return err
			}
			switch sub {
			case "max_gop_bytes":
				s.MaxGOPBytes = int(n)
			case "join_max_replay_bytes":
				s.JoinMaxReplayBytes = int(n)
			default:
				s.MaxMessageSize = int(n)
			}
		case "publish":
			if args.Len() > 1 {
				return d.Errf("publish takes at most one argument (the subject), got %d", args.Len())
			}
			s.Publish = &StreamPublish{}
			if args.Len() == 1 {
				s.Publish.Subject = args.Values()[0]
			}
		case "webrtc":
			cfg, err := parseRTCBlock(d, args)
			if err != nil {
				return err
			}
			s.WebRTC = cfg
		default:
			if ok, err := s.UnmarshalLimit(args); ok {
				return err
			}
			if ok, err := s.UnmarshalTrust(args); ok {
				return err
			}
			return d.Errf("unknown subdirective %q", sub)
		}
		return nil
	}); err != nil {
		return err
	}
	if maxFrame != 0 {
		switch {
		case s.Source != nil && s.Source.NATS != nil:
			return d.Errf("max_frame_size applies to an shm source, not to nats %q", s.Source.NATS.Subject)
		case s.Source != nil && s.Source.Encoder != "":
			return d.Errf("max_frame_size applies to an shm source, not to encoder %q", s.Source.Encoder)
		case s.Source == nil:
			s.Source = &StreamSource{SHM: &SHMSource{}}
		}
		s.Source.SHM.MaxFrameSize = maxFrame
	}
	if s.Source != nil && s.Source.NATS != nil && (crc != nil || gating != nil) {
		if crc != nil {
			return d.Errf("crc applies to an shm source, not to nats %q", s.Source.NATS.Subject)
		}
		s.Source.NATS.KeyframeGating = gating
		return nil
	}
	if crc != nil || gating != nil {
		if s.Source != nil && s.Source.Encoder != "" {
			return d.Errf("crc and keyframe_gating apply to an shm source, not to encoder %q", s.Source.Encoder)
		}
		if s.Source == nil {
			s.Source = &StreamSource{SHM: &SHMSource{}}
		}
		if crc != nil {
			s.Source.SHM.DisableCRC = !*crc
		}
		if gating != nil {
			s.Source.SHM.KeyframeGating = *gating
		}
	}
	return nil
}

func parseStreamSource(d *caddyfile.Dispenser, args []string) (*StreamSource, error) {
	if len(args) == 0 {
		return nil, d.Err("source: want shm <path> [<size>], encoder <stream> or nats <subject>")
	}
	switch args[0] {
	case "shm":
		if len(args) < 2 || len(args) > 3 {
			return nil, d.Errf("source shm takes a path and an optional size, got %d arguments", len(args)-1)
		}
		sh := &SHMSource{Path: args[1]}
		if len(args) == 3 {
			n, err := sdrcaddyfile.ParseSize(args[2])
			if err != nil {
				return nil, d.Errf("source shm size %q: want a size in bytes (4194304, 4MiB)", args[2])
			}
			sh.Size = n
		}
		return &StreamSource{SHM: sh}, nil
	case "encoder":
		if len(args) != 2 {
			return nil, d.Errf("source encoder takes one stream name, got %d arguments", len(args)-1)
		}
		return &StreamSource{Encoder: args[1]}, nil
	case "nats":
		if len(args) != 2 {
			return nil, d.Errf("source nats takes one subject, got %d arguments", len(args)-1)
		}
		return &StreamSource{NATS: &NATSSource{Subject: args[1]}}, nil
	default:
		return nil, d.Errf("unknown source %q: want shm, encoder or nats", args[0])
	}
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Stream)(nil)
