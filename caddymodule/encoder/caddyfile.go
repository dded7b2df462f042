package encoder

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("sdr_encoder", parseEncoderGlobalOption)
}

// parseEncoderGlobalOption sets up the sdr_encoder app from the global
// option block. Syntax:
//
//	sdr_encoder {
//	    encoder <name> {
//	        input shm [<path>]              # default: shm /dev/shm/sdr_os_ipc/raw
//	        input pattern [<W>x<H>]         # built-in test pattern, default 1280x720
//	        size <bytes>                    # raw ring size (shm), default: the file's
//	        crc on|off                      # raw ring CRC check (shm), default on
//	        max_frame_size <size>           # largest raw frame read (shm), default 64MiB
//	        pixel_format i420|nv12|rgba|bgra|rgb24   # pattern only, default i420
//	        codec h264|hevc|jpeg            # default h264
//	        fps <n>                         # default 30
//	        max_fps <n>                     # encode at most n frames/s
//	        bitrate <kbps>|<n>k|<n>M        # default 4000 (kbit/s)
//	        gop <frames>                    # default 60
//	        preset p1..p7|ultrafast..       # default p1
//	        profile constrained_baseline|main|high
//	        intra_refresh [on|off]
//	        jpeg_quality <1..100>           # default 80
//	        threads <n>
//	        backends <name...>              # default h264_nvenc libx264
//	        output [<path>] {               # also write an encoded-frame ring
//	            size <bytes>                # default 4194304
//	            crc on|off
//	        }
//	        nats on|off                     # NATS commands/telemetry, default on
//	    }
//	}
//
// Several encoder blocks may be given, each with its own name.
func parseEncoderGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("sdr_encoder global option given more than once")
	}
	app := new(EncoderApp)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "sdr_encoder", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the sdr_encoder global option block; see
// parseEncoderGlobalOption for the syntax.
func (a *EncoderApp) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if d.Val() != "encoder" {
			return d.Errf("unknown subdirective %q (want encoder <name> { ... })", d.Val())
		}
		if !d.NextArg() {
			return d.Err("encoder needs a name")
		}
		name := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		if _, dup := a.Encoders[name]; dup {
			return d.Errf("encoder %q defined more than once", name)
		}
		ec := new(EncoderConfig)
		if err := ec.unmarshal(d); err != nil {
			return err
		}
		if a.Encoders == nil {
			a.Encoders = map[string]*EncoderConfig{}
		}
		a.Encoders[name] = ec
	}
	return nil
}

func (ec *EncoderConfig) unmarshal(d *caddyfile.Dispenser) error {
	return sdrcaddyfile.EachSubdirective(d, "subdirective", func(key string) error {
		args := sdrcaddyfile.ReadArgs(d)
		var err error
		switch key {
		case "input":
			vals := args.Values()
			if len(vals) < 1 || len(vals) > 2 {
				return d.ArgErr()
			}
			ec.Input = vals[0]
			switch vals[0] {
			case "shm":
				if len(vals) == 2 {
					ec.Path = vals[1]
				}
			case "pattern":
				if len(vals) == 2 {
					w, h, ok := strings.Cut(strings.ToLower(vals[1]), "x")
					wi, err1 := strconv.Atoi(w)
					hi, err2 := strconv.Atoi(h)
					if !ok || err1 != nil || err2 != nil {
						return d.Errf("input pattern: size %q, want <width>x<height>", vals[1])
					}
					ec.Width, ec.Height = wi, hi
				}
			default:
				return d.Errf("input %q: want shm or pattern", vals[0])
			}
		case "size":
			var n int
			if n, err = args.WholeNumber(); err == nil {
				ec.Size = int64(n)
			}
		case "crc":
			var on bool
			if on, err = onOff(d, args, true); err == nil {
				ec.DisableCRC = !on
			}
		case "max_frame_size":
			var s string
			if s, err = args.One(); err == nil {
				n, perr := sdrcaddyfile.ParseSize(s)
				if perr != nil || n == 0 || n > 1<<30 {
					return d.Errf("max_frame_size %q: want a size in bytes from 1 to 1GiB (67108864, 64MiB)", s)
				}
				ec.MaxFrameSize = n
			}
		case "pixel_format":
			ec.PixelFormat, err = args.One()
		case "codec":
			ec.Codec, err = args.One()
		case "fps":
			ec.FPS, err = args.WholeNumber()
		case "max_fps":
			ec.MaxFPS, err = args.WholeNumber()
		case "bitrate":
			var s string
			if s, err = args.One(); err == nil {
				ec.BitrateKbps, err = encoderParseKbps(d, s)
			}
		case "gop":
			ec.GOP, err = args.WholeNumber()
		case "preset":
			ec.Preset, err = args.One()
		case "profile":
			ec.Profile, err = args.One()
		case "intra_refresh":
			ec.IntraRefresh, err = onOff(d, args, true)
		case "jpeg_quality":
			ec.JPEGQuality, err = args.WholeNumber()
		case "threads":
			ec.Threads, err = args.WholeNumber()
		case "backends":
			ec.Backends, err = args.Some()
		case "output":
			if args.Len() > 1 {
				return d.Errf("output takes at most one argument (the path), got %d", args.Len())
			}
			ec.Output = &EncoderOutput{}
			if args.Len() == 1 {
				ec.Output.Path = args.Values()[0]
			}
			if err := ec.Output.unmarshal(d); err != nil {
				return err
			}
		case "nats":
			var on bool
			if on, err = onOff(d, args, true); err == nil {
				ec.NATS = &on
			}
		default:
			return d.Errf("unknown subdirective %q", key)
		}
		return err
	})
}

func (o *EncoderOutput) unmarshal(d *caddyfile.Dispenser) error {
	return sdrcaddyfile.EachSubdirective(d, "output subdirective", func(key string) error {
		v, err := sdrcaddyfile.ReadArgs(d).One()
		if err != nil {
			return err
		}
		switch key {
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("output size %q is not a positive integer", v)
			}
			o.Size = n
		case "crc":
			switch v {
			case "on":
				o.DisableCRC = false
			case "off":
				o.DisableCRC = true
			default:
				return d.Errf("output crc %q, want on or off", v)
			}
		default:
			return d.Errf("output: unknown subdirective %q", key)
		}
		return nil
	})
}

// encoderParseKbps reads a bit rate: kbit/s, or with a k or M suffix.
func encoderParseKbps(d *caddyfile.Dispenser, s string) (int, error) {
	mul := 1.0
	v := strings.ToLower(s)
	switch {
	case strings.HasSuffix(v, "m"):
		mul, v = 1000, strings.TrimSuffix(v, "m")
	case strings.HasSuffix(v, "k"):
		v = strings.TrimSuffix(v, "k")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return 0, d.Errf("bitrate %q: want kbit/s, or a number with k or M", s)
	}
	return int(f * mul), nil
}

// onOff reads an optional on/off (or true/false) argument; def when none is
// given.
func onOff(d *caddyfile.Dispenser, args sdrcaddyfile.Args, def bool) (bool, error) {
	if args.Len() == 0 {
		return def, nil
	}
	v, err := args.One()
	if err != nil {
		return false, err
	}
	switch v {
	case "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, d.Errf("%s: %q, want on or off", args.Name(), v)
}
