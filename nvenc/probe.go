package nvenc

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Exit codes of the probe (and `caddy sdr-nvenc-probe`).
const (
	ExitNVENCWorks    = 0 // h264_nvenc (or hevc_nvenc) encoded a frame
	ExitNVENCUnusable = 1 // an NVIDIA driver/GPU is there, NVENC is not usable
	ExitNoDriver      = 2 // no NVIDIA driver
)

// ProbeReport is what Probe finds; it marshals to the probe's JSON.
type ProbeReport struct {
	// Compiled is false in a build without cgo: nothing can be encoded.
	Compiled bool `json:"compiled"`
	// FFmpeg names the linked FFmpeg libraries.
	FFmpeg map[string]string `json:"ffmpeg,omitempty"`
	// Driver is what the machine says about an NVIDIA driver and GPUs.
	Driver Driver `json:"driver"`
	// Libraries says whether the NVIDIA user-space libraries NVENC needs
	// can be loaded.
	Libraries []Library `json:"libraries,omitempty"`
	// Encoders lists the encoders of interest and whether the linked
	// FFmpeg has them.
	Encoders []EncoderInfo `json:"encoders,omitempty"`
	// Functional holds the result of opening each NVENC encoder at
	// 256x256 and encoding one frame.
	Functional []FunctionalProbe `json:"functional,omitempty"`
	// Fallback is the backend Open picks for each codec on this machine.
	Fallback map[string]string `json:"fallback,omitempty"`
	// NVENC is true when an NVENC encoder works.
	NVENC bool `json:"nvenc"`
	// Verdict says in one sentence what was found.
	Verdict string `json:"verdict"`
	// ExitCode is 0 (NVENC works), 1 (driver/GPU present, NVENC not
	// usable) or 2 (no NVIDIA driver).
	ExitCode int `json:"exit_code"`
	// Took is how long the probe ran.
	TookMS int64 `json:"took_ms"`
}

// Driver describes the NVIDIA driver as the machine shows it.
type Driver struct {
	Present bool `json:"present"`
	// Version is the first line of /proc/driver/nvidia/version.
	Version string `json:"version,omitempty"`
	// DeviceNodes lists the /dev/nvidia* nodes found.
	DeviceNodes []string `json:"device_nodes,omitempty"`
	// NvidiaSMI is the nvidia-smi found on PATH, if any.
	NvidiaSMI string `json:"nvidia_smi,omitempty"`
	// GPUs as nvidia-smi lists them.
	GPUs []GPU `json:"gpus,omitempty"`
	// SMIError says why nvidia-smi gave nothing.
	SMIError string `json:"nvidia_smi_error,omitempty"`
}

// GPU is one line of nvidia-smi --query-gpu.
type GPU struct {
	Name          string `json:"name"`
	DriverVersion string `json:"driver_version"`
	BusID         string `json:"pci_bus_id"`
	EncoderUtil   string `json:"encoder_utilization,omitempty"`
}

// Library is one shared library NVENC needs.
type Library struct {
	Name     string `json:"name"`
	Loadable bool   `json:"loadable"`
	Error    string `json:"error,omitempty"`
}

// EncoderInfo is one encoder and whether the linked FFmpeg has it.
type EncoderInfo struct {
	Name      string `json:"name"`
	Codec     string `json:"codec"`
	Available bool   `json:"available"`
	Hardware  bool   `json:"hardware"`
}

// FunctionalProbe is the result of encoding one 256x256 frame.
type FunctionalProbe struct {
	Backend string `json:"backend"`
	OK      bool   `json:"ok"`
	// Error is the Go error; Reason the operator's summary; Log what
	// FFmpeg said, verbatim.
	Error  string   `json:"error,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Log    []string `json:"log,omitempty"`
	Bytes  int      `json:"bytes,omitempty"`
	TookMS int64    `json:"took_ms"`
}

// ProbeOptions tunes Probe.
type ProbeOptions struct {
	// Timeout bounds each functional probe and nvidia-smi; default 20 s.
	Timeout time.Duration
	// ProcRoot and DevRoot replace /proc and /dev (tests).
	ProcRoot, DevRoot string
}

// Probe finds out what this machine can encode with: the NVIDIA driver and
// GPUs, the libraries NVENC loads, the encoders of the linked FFmpeg, a
// functional NVENC probe, and the backend each codec falls back to.
func Probe(ctx context.Context, o ProbeOptions) ProbeReport {
	start := time.Now()
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.DevRoot == "" {
		o.DevRoot = "/dev"
	}
	r := ProbeReport{Compiled: Compiled}
	r.Driver = probeDriver(ctx, o)
	probeFFmpeg(ctx, o, &r)
	r.ExitCode, r.Verdict = verdict(r)
	r.TookMS = time.Since(start).Milliseconds()
	return r
}

func probeDriver(ctx context.Context, o ProbeOptions) Driver {
	var d Driver
	if b, err := os.ReadFile(o.ProcRoot + "/driver/nvidia/version"); err == nil {
		d.Present = true
		d.Version = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	for _, n := range []string{"nvidiactl", "nvidia0", "nvidia-uvm"} {
		if _, err := os.Stat(o.DevRoot + "/" + n); err == nil {
			d.DeviceNodes = append(d.DeviceNodes, o.DevRoot+"/"+n)
			d.Present = true
		}
	}
	smi, err := exec.LookPath("nvidia-smi")
	if err != nil {
		d.SMIError = "nvidia-smi not found on PATH"
		return d
	}
	d.NvidiaSMI = smi
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, smi, "--query-gpu=name,driver_version,pci.bus_id,utilization.encoder", "--format=csv,noheader")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		d.SMIError = strings.TrimSpace(err.Error() + ": " + strings.TrimSpace(string(out)) + " " + strings.TrimSpace(stderr.String()))
		return d
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		d.SMIError = "parsing nvidia-smi output: " + err.Error()
		return d
	}
	for _, rec := range recs {
		if len(rec) < 3 {
			continue
		}
		g := GPU{Name: strings.TrimSpace(rec[0]), DriverVersion: strings.TrimSpace(rec[1]), BusID: strings.TrimSpace(rec[2])}
		if len(rec) > 3 {
			g.EncoderUtil = strings.TrimSpace(rec[3])
		}
		d.GPUs = append(d.GPUs, g)
	}
	if len(d.GPUs) > 0 {
		d.Present = true
	}
	return d
}

func verdict(r ProbeReport) (int, string) {
	if !r.Compiled {
		if !r.Driver.Present {
			return ExitNoDriver, "encoding is not compiled in (built without cgo), and no NVIDIA driver is present"
		}
		return ExitNVENCUnusable, "encoding is not compiled in (built without cgo): NVENC cannot be used even though an NVIDIA driver is present"
	}
	fallback := r.Fallback["h264"]
	if fallback == "" {
		fallback = "nothing (no H.264 encoder works)"
	}
	for _, f := range r.Functional {
		if f.OK {
			return ExitNVENCWorks, "NVENC works: " + f.Backend + " encoded a 256x256 frame; H.264 uses " + fallback
		}
	}
	if !r.Driver.Present {
		return ExitNoDriver, "no NVIDIA driver (no /proc/driver/nvidia/version, no /dev/nvidia*, no GPU from nvidia-smi); H.264 falls back to " + fallback
	}
	for _, l := range r.Libraries {
		if l.Name == "libnvidia-encode.so.1" && !l.Loadable {
			return ExitNVENCUnusable, "library missing: container lacks the `video` driver capability (libnvidia-encode.so.1 cannot be loaded: " + l.Error + "; set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video); H.264 falls back to " + fallback
		}
	}
	for _, f := range r.Functional {
		if f.Reason != "" {
			return ExitNVENCUnusable, f.Reason + "; H.264 falls back to " + fallback
		}
	}
	return ExitNVENCUnusable, "NVIDIA driver present but NVENC is not usable; H.264 falls back to " + fallback
}

var errProbeTimeout = errors.New("functional probe timed out")
