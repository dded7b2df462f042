package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcmd"
	"github.com/sdr-os/sdr-caddy/internal/simulator"
	"github.com/sdr-os/sdr-caddy/shmring"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sdr-ring",
		Usage: "inspect|watch [<path>]",
		Short: "Inspects or watches a shared-memory frame ring (what to run when video is missing)",
		Long: `
Reads a shared-memory frame ring file (the simulator's encoded-frame ring,
default ` + shmring.DefaultPath + `, or the raw-frame ring, default
` + shmring.DefaultRawPath + `) with the same checks as the stream reader.

  caddy sdr-ring inspect [--no-crc] [--json] [<path>]
      Prints the committed frame: sequence, write_len, header fields, header
      and computed CRC, age (when frame_id is a commit time), raw layout.
      Exit status 0 when the slot holds a verified frame, 1 otherwise.

  caddy sdr-ring watch [--interval 1s] [--count N] [--timeout D] [--no-crc] [--size N] [<path>]
      Reads the ring live and prints one line per interval: fps, average and
      largest frame, keyframes and keyframe interval, codec, sequence, age of
      the last frame, the writer's learned period, and the CRC failures, torn
      reads, gaps, restarts and faults of the interval; attach, remap,
      restart and fault events are logged as they happen. Stops on Ctrl-C,
      after --count lines or after --timeout. Exit status 0 when the ring
      was attached at some line, 1 when it never was.

An unknown subcommand, argument or flag exits 2.
`,
		CobraFunc: func(cmd *cobra.Command) {
			sdrcmd.Group(cmd)
			inspect := &cobra.Command{
				Use:   "inspect [<path>]",
				Short: "Prints the frame committed in a ring file",
				RunE:  sdrcmd.Run(runRingInspect),
			}
			sdrcmd.Strict(inspect, cobra.MaximumNArgs(1))
			inspect.Flags().Bool("no-crc", false, "do not verify the payload CRC (for writers running with CRC off)")
			inspect.Flags().Bool("json", false, "print JSON")
			watch := &cobra.Command{
				Use:   "watch [<path>]",
				Short: "Prints live fps, sizes, keyframe interval and CRC failures of a ring",
				RunE:  sdrcmd.Run(runRingWatch),
			}
			sdrcmd.Strict(watch, cobra.MaximumNArgs(1))
			watch.Flags().Duration("interval", time.Second, "time between lines")
			watch.Flags().Int("count", 0, "stop after this many lines (0: until interrupted)")
			watch.Flags().Duration("timeout", 0, "stop after this long (0: until interrupted)")
			watch.PreRunE = func(c *cobra.Command, _ []string) error {
				interval, _ := c.Flags().GetDuration("interval")
				timeout, _ := c.Flags().GetDuration("timeout")
				if timeout < 0 || (timeout > 0 && timeout < interval) {
					return sdrcmd.UsageError(c, fmt.Errorf("--timeout %v: want 0 or at least --interval (%v), so that a line is printed", timeout, interval))
				}
				return nil
			}
			watch.Flags().Bool("no-crc", false, "do not verify the payload CRC")
			watch.Flags().Int64("size", 0, "expected file size; a different size is reported (0: the file's)")
			cmd.AddCommand(inspect, watch)
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sdr-testsrc",
		Usage: "[--codec h264|hevc|jpeg|i420|nv12|rgba|bgra|rgb24] [--path <file>] [--size <bytes>] [--resolution <WxH>] [--fps <n>] [--gop <n>] [--bitrate <kbps>] [--jpeg-quality <1..100>] [--backend <name>] [--no-crc] [--frames <n>] [--nats <url>]",
		Short: "Writes a moving test pattern into a frame ring, as the simulator does",
		Long: `
Stands in for the simulator: renders the moving test pattern (colour bars,
a moving box, the frame number and commit time as digits and as a barcode)
at a fixed frame rate and commits each frame into a shared-memory ring.

With an encoded codec (h264, the default; hevc; jpeg) the frames are encoded
through FFmpeg (h264_nvenc, else libx264; mjpeg for jpeg) and written into the
encoded-frame ring (default ` + shmring.DefaultPath + `) that sdr_stream reads.
With a raw pixel format (i420, nv12, rgba, bgra, rgb24) they are written
unencoded into the raw-frame ring (default ` + shmring.DefaultRawPath + `) that
the sdr_encoder app reads.

frame_id is the commit time in Unix nanoseconds, so players can show the age
of each frame. With --nats it also answers command.genesis.* as the simulator
does: force_idr makes the next frame an IDR, commands get an "ok" ack on
telemetry.command.ack, estop/estop_clear/pause/reset change
telemetry.safety.state, and telemetry.frame.stats goes out once a second. The ring is created (and its control region zeroed) at start;
the command runs until interrupted or until --frames frames are written.
`,
		CobraFunc: func(cmd *cobra.Command) {
			f := cmd.Flags()
			f.String("codec", "h264", "h264, hevc or jpeg (encoded ring); i420, nv12, rgba, bgra or rgb24 (raw ring)")
			f.String("path", "", "ring file (default "+shmring.DefaultPath+", or "+shmring.DefaultRawPath+" for raw formats; $SDR_SHM_PATH for encoded)")
			f.String("size", "", "ring file size in bytes, control region included (default 4194304 encoded, 67108864 raw; $SDR_SHM_SIZE for encoded)")
			f.String("resolution", "1280x720", "picture size WxH (even, at least 192x64)")
			f.Int("fps", 60, "frames per second")
			f.Int("gop", 0, "frames from one IDR to the next (default 60)")
			f.Int("bitrate", 0, "H.264/HEVC bit rate in kbit/s (default 4000)")
			f.Int("jpeg-quality", 0, "JPEG quality 1..100 (default 80)")
			f.StringSlice("backend", nil, "FFmpeg encoder(s) to try, in order (default h264_nvenc,libx264)")
			f.Bool("no-crc", false, "write 0 instead of the payload CRC-32")
			f.Uint64("frames", 0, "stop after this many frames (default: run until interrupted)")
			f.String("nats", "", "NATS server to take command.genesis.* from, as the simulator does (force_idr, acks, safety state, frame stats)")
			sdrcmd.Strict(cmd, nil)
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdTestSource)
		},
	})
}

func ringPath(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return shmring.DefaultPath
}

func runRingInspect(cmd *cobra.Command, args []string) (int, error) {
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	out := cmd.OutOrStdout()
	in, err := shmring.Inspect(ringPath(args), !fl.Bool("no-crc"))
	if err != nil {
		return exitFailed, fmt.Errorf("inspecting ring: %w", err)
	}
	if fl.Bool("json") {
		b, err := json.MarshalIndent(inspectionView(in), "", "  ")
		if err != nil {
			return exitFailed, fmt.Errorf("encoding inspection: %w", err)
		}
		if _, err := fmt.Fprintln(out, string(b)); err != nil {
			return exitFailed, err
		}
	} else if err := in.WriteText(out); err != nil {
		return exitFailed, err
	}
	if !in.Verified {
		if in.Problem == "" {
			return exitFailed, errors.New("ring holds no verified frame")
		}
		return exitFailed, fmt.Errorf("ring holds no verified frame: %s", in.Problem)
	}
	return 0, nil
}

func runRingWatch(cmd *cobra.Command, args []string) (int, error) {
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	out := cmd.OutOrStdout()
	interval, count, timeout := fl.Duration("interval"), fl.Int("count"), fl.Duration("timeout")
	size, err := fl.GetInt64("size")
	if err != nil {
		return exitFailed, err
	}
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, timeout)
		defer cancelTimeout()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := ringPath(args)
	if _, err := fmt.Fprintf(out, "watching %s every %v (Ctrl-C stops)\n", path, interval); err != nil {
		return exitFailed, err
	}
	lines := 0
	attached := false
	var werr error
	// Attach, remap, restart and fault events are logged between the lines.
	cfg := shmring.ReaderConfig{Path: path, Size: size, DisableCRC: fl.Bool("no-crc"), Logger: sdrcmd.Logger("sdr-ring")}
	err = shmring.Watch(ctx, cfg, interval, func(w shmring.Window) {
		if _, err := fmt.Fprintf(out, "%s %s\n", w.End.Format("15:04:05"), w); err != nil {
			werr = err
			cancel()
			return
		}
		attached = attached || w.Total.Attached
		lines++
		if count > 0 && lines >= count {
			cancel()
		}
	})
	if err != nil {
		return exitFailed, fmt.Errorf("watching ring: %w", err)
	}
	if werr != nil {
		return exitFailed, werr
	}
	if !attached {
		return exitFailed, fmt.Errorf("ring %s was not attached during the watch (%d lines): does the file exist?", path, lines)
	}
	return 0, nil
}

func cmdTestSource(fl caddycmd.Flags) (int, error) {
	src, err := testSourceFromFlags(fl)
	if err != nil {
		return exitFailed, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	src.Logger = sdrcmd.Logger("sdr-testsrc")
	if url := fl.String("nats"); url != "" {
		bus, err := simulator.ConnectBus(url, src, src.Logger)
		if err != nil {
			return exitFailed, err
		}
		src.OnFrame = bus.Frame
		busCtx, busStop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); bus.Run(busCtx) }()
		defer func() { busStop(); <-done }()
	}
	if err := src.Run(ctx); err != nil {
		return exitFailed, err
	}
	return 0, nil
}

// exitFailed is the exit status of a failed command.
const exitFailed = 1

func testSourceFromFlags(fl caddycmd.Flags) (*simulator.Writer, error) {
	codec, err := simulator.ParseCodec(fl.String("codec"))
	if err != nil {
		return nil, err
	}
	w, h, err := simulator.ParseResolution(fl.String("resolution"))
	if err != nil {
		return nil, err
	}
	src := &simulator.Writer{
		Codec:       codec,
		Width:       w,
		Height:      h,
		FPS:         fl.Int("fps"),
		GOP:         fl.Int("gop"),
		BitrateKbps: fl.Int("bitrate"),
		JPEGQuality: fl.Int("jpeg-quality"),
		NoCRC:       fl.Bool("no-crc"),
	}
	if src.Backends, err = fl.GetStringSlice("backend"); err != nil {
		return nil, err
	}
	if src.Frames, err = fl.GetUint64("frames"); err != nil {
		return nil, err
	}
	src.Path, src.Size = shmring.DefaultPath, shmring.DefaultSize
	if codec.IsRaw() {
		src.Path, src.Size = shmring.DefaultRawPath, shmring.DefaultRawSize
	} else {
		if v := os.Getenv("SDR_SHM_PATH"); v != "" {
			src.Path = v
		}
		if v := os.Getenv("SDR_SHM_SIZE"); v != "" {
			if src.Size, err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, fmt.Errorf("SDR_SHM_SIZE %q: %w", v, err)
			}
		}
	}
	if v := fl.String("path"); v != "" {
		src.Path = v
	}
	if v := fl.String("size"); v != "" {
		if src.Size, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("--size %q: %w", v, err)
		}
	}
	if err := src.Validate(); err != nil {
		return nil, err
	}
	return src, nil
}
