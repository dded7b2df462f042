// Package export registers `caddy sdr-export`, which writes a window of a
// flight-recorder recording on JetStream into an MCAP or MP4 file (the work
// is package internal/export's).
package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcmd"
	"github.com/sdr-os/sdr-caddy/internal/export"
	"github.com/sdr-os/sdr-caddy/internal/recording"
)

const exitFailed = 1

// defaultNATS is where the command looks for the recording without --nats
// and $SDR_NATS_URL: sdr_nats's embedded server's default listener.
const defaultNATS = "nats://127.0.0.1:4222"

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sdr-export",
		Usage: "--out <file.mcap|file.mp4> [--from <time>] [--to <time>] [--stream <name>] [--video <name>] [--nats <url>]",
		Short: "Exports a window of the flight recorder's recording to MCAP or MP4",
		Long: `
Reads a window of a recording that sdr_recorder keeps on JetStream and writes
it to a file; the file's extension chooses the format.

  .mcap  every kind of record: video as foxglove.CompressedVideo (one
         message per frame, H.264 or H.265 Annex B), telemetry, commands with
         their outcome and the safety gate's transitions as JSON, one channel
         per subject, with the recorded times as log times. Foxglove and the
         ROS 2 tooling open it.
  .mp4   one H.264 video stream, remuxed without re-encoding, timed as
         recorded. The file appears only once it is complete.

--from and --to take RFC 3339 times (2026-12-04T10:00:00Z), "now", or a
negative duration before now (-2m); without them the window runs from the start or to
the end of the recording. Video starts at the keyframe at or before --from, so
the first frame decodes. --stream names the JetStream stream (default
` + recording.DefaultStream + `, or a kept window's stream); --video chooses the video stream of
an MP4 when the recording holds several (default: the first one). --nats is
the NATS server that holds the recording (default $SDR_NATS_URL, else
` + defaultNATS + `, the embedded server's listener).

Exit status 0 when the file was written, 1 when it was not, 2 on a usage error.
`,
		CobraFunc: func(cmd *cobra.Command) {
			f := cmd.Flags()
			f.String("out", "", "the file to write: .mcap or .mp4")
			f.String("from", "", "start of the window (RFC 3339, now, or -2m); default the recording's start")
			f.String("to", "", "end of the window; default the recording's end")
			f.String("stream", recording.DefaultStream, "the recording's JetStream stream")
			f.String("prefix", recording.DefaultPrefix, "the recording's subject prefix")
			f.String("video", "", "the video stream of an MP4 (default: the first in the window)")
			f.String("nats", "", "NATS server URL (default $SDR_NATS_URL, else "+defaultNATS+")")
			f.Duration("timeout", 10*time.Second, "how long to wait for the NATS server")
			sdrcmd.Strict(cmd, nil)
			cmd.PreRunE = func(c *cobra.Command, _ []string) error {
				if _, err := parseRequest(c, time.Now()); err != nil {
					return sdrcmd.UsageError(c, err)
				}
				return nil
			}
			cmd.RunE = sdrcmd.Run(runExport)
		},
	})
}

// request is what one export is asked for, from the flags.
type request struct {
	out, format string
	from, to    time.Time
	opts        recording.ReadOptions
	video       string
}

func parseRequest(cmd *cobra.Command, now time.Time) (request, error) {
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	var r request
	r.out = fl.String("out")
	if r.out == "" {
		return r, errors.New("--out is required")
	}
	r.format = strings.ToLower(strings.TrimPrefix(filepath.Ext(r.out), "."))
	if r.format != "mcap" && r.format != "mp4" {
		return r, fmt.Errorf("--out %s: the extension must be .mcap or .mp4", r.out)
	}
	var err error
	if r.from, err = export.ParseTime("--from", fl.String("from"), now); err != nil {
		return r, err
	}
	if r.to, err = export.ParseTime("--to", fl.String("to"), now); err != nil {
		return r, err
	}
	if !r.from.IsZero() && !r.to.IsZero() && r.to.Before(r.from) {
		return r, fmt.Errorf("--to %s is before --from %s", r.to.Format(time.RFC3339Nano), r.from.Format(time.RFC3339Nano))
	}
	if err := recording.ValidateStreamName(fl.String("stream")); err != nil {
		return r, fmt.Errorf("--stream: %w", err)
	}
	r.video = fl.String("video")
	if r.video != "" && r.format != "mp4" {
		return r, errors.New("--video chooses the stream of an .mp4; an .mcap holds every stream")
	}
	r.opts = recording.ReadOptions{Stream: fl.String("stream"), Prefix: fl.String("prefix"), From: r.from, To: r.to}
	return r, nil
}

func runExport(cmd *cobra.Command, _ []string) (int, error) {
	r, err := parseRequest(cmd, time.Now())
	if err != nil {
		return exitFailed, err // PreRunE made it a usage error already
	}
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	url := fl.String("nats")
	if url == "" {
		url = os.Getenv("SDR_NATS_URL")
	}
	if url == "" {
		url = defaultNATS
	}
	nc, err := nats.Connect(url, nats.Name("sdr-export"), nats.Timeout(fl.Duration("timeout")))
	if err != nil {
		return exitFailed, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return exitFailed, fmt.Errorf("jetstream on %s: %w", url, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := js.Stream(ctx, r.opts.Stream); err != nil {
		return exitFailed, fmt.Errorf("recording %q on %s: %w", r.opts.Stream, url, err)
	}
	var rs recording.ReadStats
	st, err := export.WriteFile(ctx, export.FromJetStream(js, r.opts, &rs), r.out, r.format, r.video)
	if err != nil {
		return exitFailed, fmt.Errorf("exporting %s: %w", r.out, err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), Summary(r.out, st, rs))
	return 0, nil
}

// Summary is the line printed after an export.
func Summary(out string, st export.Stats, rs recording.ReadStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "wrote %s: %d frames", out, st.Frames)
	if st.Video != "" {
		fmt.Fprintf(&b, " of %s (%v)", st.Video, st.Duration.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, ", %d telemetry, %d commands, %d gate transitions", st.Telemetry, st.Commands, st.Gate)
	}
	if !st.First.IsZero() {
		fmt.Fprintf(&b, ", %s to %s", st.First.UTC().Format(time.RFC3339Nano), st.Last.UTC().Format(time.RFC3339Nano))
	}
	if len(st.Streams) > 1 {
		fmt.Fprintf(&b, "; video streams in the window: %s", strings.Join(st.Streams, ", "))
	}
	if n := st.SkippedFrames + rs.Incomplete + rs.Undecodable; n > 0 {
		fmt.Fprintf(&b, "; %d frames left out (%d before a keyframe or of another stream or codec, %d incomplete, %d undecodable)", n, st.SkippedFrames, rs.Incomplete, rs.Undecodable)
	}
	if st.Wrapped > 0 {
		fmt.Fprintf(&b, "; %d non-JSON bodies kept as base64", st.Wrapped)
	}
	if rs.Malformed > 0 {
		fmt.Fprintf(&b, "; %d malformed messages skipped", rs.Malformed)
	}
	return b.String()
}
