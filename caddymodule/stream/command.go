package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

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

  caddy sdr-ring watch [--interval 1s] [--count N] [--no-crc] [--size N] [<path>]
      Reads the ring live and prints one line per interval: fps, average and
      largest frame, keyframes and keyframe interval, codec, sequence, age of
      the last frame, the writer's learned period, and the CRC failures, torn
      reads, gaps, restarts and faults of the interval; attach, remap,
      restart and fault events go to stderr as they happen. Stops on Ctrl-C
      or after --count lines.
`,
		CobraFunc: func(cmd *cobra.Command) {
			inspect := &cobra.Command{
				Use:   "inspect [<path>]",
				Short: "Prints the frame committed in a ring file",
				Args:  cobra.MaximumNArgs(1),
				RunE:  runRingInspect,
			}
			inspect.Flags().Bool("no-crc", false, "do not verify the payload CRC (for writers running with CRC off)")
			inspect.Flags().Bool("json", false, "print JSON")
			watch := &cobra.Command{
				Use:   "watch [<path>]",
				Short: "Prints live fps, sizes, keyframe interval and CRC failures of a ring",
				Args:  cobra.MaximumNArgs(1),
				RunE:  runRingWatch,
			}
			watch.Flags().Duration("interval", time.Second, "time between lines")
			watch.Flags().Int("count", 0, "stop after this many lines (0: until interrupted)")
			watch.Flags().Bool("no-crc", false, "do not verify the payload CRC")
			watch.Flags().Int64("size", 0, "expected file size; a different size is reported (0: the file's)")
			cmd.AddCommand(inspect, watch)
		},
	})
}

func ringPath(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return shmring.DefaultPath
}

func runRingInspect(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true // the arguments were fine; what follows is about the ring
	noCRC, _ := cmd.Flags().GetBool("no-crc")
	asJSON, _ := cmd.Flags().GetBool("json")
	in, err := shmring.Inspect(ringPath(args), !noCRC)
	if err != nil {
		return fmt.Errorf("inspecting ring: %w", err)
	}
	out := cmd.OutOrStdout()
	if asJSON {
		b, err := json.MarshalIndent(in, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding inspection: %w", err)
		}
		if _, err := fmt.Fprintln(out, string(b)); err != nil {
			return err
		}
	} else if err := in.WriteText(out); err != nil {
		return err
	}
	if !in.Verified {
		if in.Problem == "" {
			return errors.New("ring holds no verified frame")
		}
		return fmt.Errorf("ring holds no verified frame: %s", in.Problem)
	}
	return nil
}

func runRingWatch(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true
	interval, _ := cmd.Flags().GetDuration("interval")
	count, _ := cmd.Flags().GetInt("count")
	noCRC, _ := cmd.Flags().GetBool("no-crc")
	size, _ := cmd.Flags().GetInt64("size")
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := cmd.OutOrStdout()
	path := ringPath(args)
	if _, err := fmt.Fprintf(out, "watching %s every %v (Ctrl-C stops)\n", path, interval); err != nil {
		return err
	}
	lines := 0
	var werr error
	// Attach, remap, restart and fault events go to stderr between the lines.
	events := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	cfg := shmring.ReaderConfig{Path: path, Size: size, DisableCRC: noCRC, Logger: events}
	err := shmring.Watch(ctx, cfg, interval, func(w shmring.Window) {
		if _, err := fmt.Fprintf(out, "%s %s\n", w.End.Format("15:04:05"), w); err != nil {
			werr = err
			cancel()
			return
		}
		lines++
		if count > 0 && lines >= count {
			cancel()
		}
	})
	if err != nil {
		return fmt.Errorf("watching ring: %w", err)
	}
	return werr
}
