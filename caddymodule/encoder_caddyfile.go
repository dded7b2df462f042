package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"
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
	return eachSubdirective(d, "subdirective", func(key string) error {
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.ArgErr()
			}
			return args[0], nil
		}
		num := func() (int, error) {
			s, err := one()
			if err != nil {
				return 0, err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return 0, d.Errf("%s: %q is not a non-negative integer", key, s)
			}
			return n, nil
		}
		onOff := func(def bool) (bool, error) {
			if len(args) == 0 {
				return def, nil
			}
			if len(args) > 1 {
				return false, d.ArgErr()
			}
			switch args[0] {
			case "on", "true":
				return true, nil
			case "off", "false":
				return false, nil
			}
			return false, d.Errf("%s: %q, want on or off", key, args[0])
		}
		var err error
		switch key {
		case "input":
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			ec.Input = args[0]
			switch args[0] {
			case "shm":
				if len(args) == 2 {
					ec.Path = args[1]
				}
			case "pattern":
				if len(args) == 2 {
					w, h, ok := strings.Cut(strings.ToLower(args[1]), "x")
					wi, err1 := strconv.Atoi(w)
					hi, err2 := strconv.Atoi(h)
					if !ok || err1 != nil || err2 != nil {
						return d.Errf("input pattern: size %q, want <width>x<height>", args[1])
					}
					ec.Width, ec.Height = wi, hi
				}
			default:
				return d.Errf("input %q: want shm or pattern", args[0])
			}
		case "size":
			var n int
			if n, err = num(); err == nil {
				ec.Size = int64(n)
			}
		case "crc":
			var on bool
			if on, err = onOff(true); err == nil {
				ec.DisableCRC = !on
			}
		case "max_frame_size":
			var s string
			if s, err = one(); err == nil {
				n, perr := humanize.ParseBytes(s)
				if perr != nil || n == 0 || n > 1<<30 {
					return d.Errf("max_frame_size %q: want a size in bytes from 1 to 1GiB (67108864, 64MiB)", s)
				}
				ec.MaxFrameSize = int64(n)
			}
		case "pixel_format":
			ec.PixelFormat, err = one()
		case "codec":
			ec.Codec, err = one()
		case "fps":
			ec.FPS, err = num()
		case "max_fps":
			ec.MaxFPS, err = num()
		case "bitrate":
			var s string
			if s, err = one(); err == nil {
				ec.BitrateKbps, err = encoderParseKbps(d, s)
			}
		case "gop":
			ec.GOP, err = num()
		case "preset":
			ec.Preset, err = one()
		case "profile":
			ec.Profile, err = one()
		case "intra_refresh":
			ec.IntraRefresh, err = onOff(true)
		case "jpeg_quality":
			ec.JPEGQuality, err = num()
		case "threads":
			ec.Threads, err = num()
		case "backends":
			if len(args) == 0 {
				return d.ArgErr()
			}
			ec.Backends = args
		case "output":
			if len(args) > 1 {
				return d.ArgErr()
			}
			ec.Output = &EncoderOutput{}
			if len(args) == 1 {
				ec.Output.Path = args[0]
			}
			if err := ec.Output.unmarshal(d); err != nil {
				return err
			}
		case "nats":
			var on bool
			if on, err = onOff(true); err == nil {
				ec.NATS = &on
			}
		default:
			return d.Errf("unknown subdirective %q", key)
		}
		return err
	})
}

func (o *EncoderOutput) unmarshal(d *caddyfile.Dispenser) error {
	return eachSubdirective(d, "output subdirective", func(key string) error {
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.ArgErr()
		}
		switch key {
		case "size":
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("output size %q is not a positive integer", args[0])
			}
			o.Size = n
		case "crc":
			switch args[0] {
			case "on":
				o.DisableCRC = false
			case "off":
				o.DisableCRC = true
			default:
				return d.Errf("output crc %q, want on or off", args[0])
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
