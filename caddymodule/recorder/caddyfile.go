package recorder

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("sdr_recorder", parseGlobalOption)
}

// parseGlobalOption sets up the sdr_recorder app from the global option
// block. Syntax (every subdirective optional):
//
//	sdr_recorder [on|off] {
//	    stream       <name>          # default SDR_REC
//	    prefix       <prefix>        # default rec.
//	    max_age      <duration>      # default 10m
//	    max_bytes    <size>          # default 2GiB
//	    replicas     <n>             # default 1
//	    storage      file|memory     # default file
//	    idr_interval <duration>|off  # default 2s
//	    queue        <n>             # default 256
//	    batch        <duration>|off  # default 500ms
//	    subjects     <pattern...>    # default telemetry.>
//	    keep_max       <n>           # kept windows at most; default 32
//	    keep_max_bytes <size>        # bytes of the kept windows at most; default 2GiB
//	}
//
// off leaves the app out of the configuration, as if the block were not
// there (its subdirectives are still checked), so that one Caddyfile can
// carry the block and an environment variable turn it on:
// `sdr_recorder {$SDR_RECORDER:off} { ... }`. on, or nothing, turns it on.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("sdr_recorder global option given more than once")
	}
	d.Next() // the option name
	on := true
	if d.NextArg() {
		switch d.Val() {
		case "on":
		case "off":
			on = false
		default:
			return nil, d.Errf("sdr_recorder %q: want on or off before the block", d.Val())
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	}
	app := new(App)
	if err := app.unmarshalBlock(d); err != nil {
		return nil, err
	}
	if !on {
		// Not an httpcaddyfile.App: no app is configured, and a second
		// sdr_recorder option is still refused.
		return recorderOff{}, nil
	}
	return httpcaddyfile.App{Name: "sdr_recorder", Value: caddyconfig.JSON(app, nil)}, nil
}

// recorderOff is the value of `sdr_recorder off`.
type recorderOff struct{}

// UnmarshalCaddyfile reads the sdr_recorder global option block; see
// parseGlobalOption for the syntax.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	return a.unmarshalBlock(d)
}

// unmarshalBlock reads the block of the option whose name (and arguments)
// d has read.
func (a *App) unmarshalBlock(d *caddyfile.Dispenser) error {
	return sdrcaddyfile.EachSubdirective(d, "subdirective", func(key string) error {
		args := sdrcaddyfile.ReadArgs(d)
		var err error
		switch key {
		case "stream":
			a.Stream, err = args.One()
		case "prefix":
			a.Prefix, err = args.One()
		case "max_age":
			a.MaxAge, err = duration(d, args)
		case "max_bytes":
			a.MaxBytes, err = args.Size()
		case "replicas":
			a.Replicas, err = args.PositiveInt()
		case "storage":
			a.Storage, err = args.One()
			if err == nil && a.Storage != "file" && a.Storage != "memory" {
				return d.Errf("storage %q: want file or memory", a.Storage)
			}
		case "idr_interval":
			a.IDRInterval, err = durationOrOff(d, args)
		case "queue":
			a.Queue, err = args.PositiveInt()
		case "batch":
			a.Batch, err = durationOrOff(d, args)
		case "subjects":
			a.Subjects, err = args.Some()
		case "keep_max":
			a.KeepMax, err = args.PositiveInt()
		case "keep_max_bytes":
			a.KeepMaxBytes, err = args.Size()
		default:
			return d.Errf("unknown subdirective %q", key)
		}
		return err
	})
}

// duration reads one positive duration.
func duration(d *caddyfile.Dispenser, args sdrcaddyfile.Args) (caddy.Duration, error) {
	v, err := args.One()
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s %q: want a positive duration (2s, 10m)", args.Name(), v)
	}
	return caddy.Duration(dur), nil
}

// durationOrOff reads a positive duration, or off: -1.
func durationOrOff(d *caddyfile.Dispenser, args sdrcaddyfile.Args) (caddy.Duration, error) {
	v, err := args.One()
	if err != nil {
		return 0, err
	}
	if v == "off" {
		return -1, nil
	}
	return duration(d, args)
}

var _ caddyfile.Unmarshaler = (*App)(nil)
