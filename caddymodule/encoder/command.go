package encoder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/nvenc"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sdr-nvenc-probe",
		Usage: "[--timeout <duration>] [--compact]",
		Short: "Reports whether NVENC works here, and what the encoder falls back to",
		Long: `
Prints one JSON document: the NVIDIA driver and GPUs (/proc/driver/nvidia,
/dev/nvidia*, nvidia-smi when present), whether libcuda.so.1 and
libnvidia-encode.so.1 can be loaded, which encoders the linked FFmpeg has,
the result of opening h264_nvenc and hevc_nvenc at 256x256 and encoding one
frame (with FFmpeg's own messages, verbatim), and the backend each codec
falls back to.

Exit status: 0 NVENC works; 1 an NVIDIA driver/GPU is present but NVENC is
not usable (the verdict says why: "library missing: container lacks the
` + "`video`" + ` driver capability", or "GPU without NVENC" on datacenter GPUs such as
A100/H100/H200); 2 no NVIDIA driver.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Duration("timeout", 0, "bound on each functional probe and on nvidia-smi (default 20s)")
			cmd.Flags().Bool("compact", false, "print the JSON on one line")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdNVENCProbe)
		},
	})
}

func cmdNVENCProbe(fl caddycmd.Flags) (int, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep := nvenc.Probe(ctx, nvenc.ProbeOptions{Timeout: fl.Duration("timeout")})
	var b []byte
	var err error
	if fl.Bool("compact") {
		b, err = json.Marshal(rep)
	} else {
		b, err = json.MarshalIndent(rep, "", "  ")
	}
	if err != nil {
		return nvenc.ExitNVENCUnusable, fmt.Errorf("encoding probe report: %w", err)
	}
	fmt.Println(string(b))
	if rep.ExitCode == nvenc.ExitNVENCUnusable {
		// Caddy's command wrapper exits 0 for status 1 without an error.
		return rep.ExitCode, errors.New(rep.Verdict)
	}
	return rep.ExitCode, nil
}
