package nvenc

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestProbeHere runs the probe on this machine, which has no NVIDIA
// driver: exit code 2 and the software fallbacks.
func TestProbeHere(t *testing.T) {
	if _, err := os.Stat("/proc/driver/nvidia/version"); err == nil {
		t.Skip("this machine has an NVIDIA driver; the GPU check covers it")
	}
	r := Probe(context.Background(), ProbeOptions{Timeout: testwait.Timeout(30 * time.Second)})
	if r.ExitCode != ExitNoDriver || r.Driver.Present || r.NVENC {
		t.Fatalf("exit %d present %v nvenc %v: %s", r.ExitCode, r.Driver.Present, r.NVENC, r.Verdict)
	}
	if !strings.Contains(r.Verdict, "no NVIDIA driver") {
		t.Errorf("verdict %q", r.Verdict)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"compiled", "driver", "verdict", "exit_code", "nvenc"} {
		if _, ok := m[k]; !ok {
			t.Errorf("probe JSON lacks %q: %s", k, b)
		}
	}
	if !Compiled {
		if !strings.Contains(r.Verdict, "not compiled in") {
			t.Errorf("verdict without cgo: %q", r.Verdict)
		}
		return
	}
	if r.Fallback["h264"] != "libx264" || r.Fallback["jpeg"] != "mjpeg" {
		t.Errorf("fallback %v", r.Fallback)
	}
	if len(r.Functional) != 2 || r.Functional[0].Backend != "h264_nvenc" || r.Functional[0].OK || r.Functional[0].Error == "" {
		t.Errorf("functional %+v", r.Functional)
	}
	found := false
	for _, e := range r.Encoders {
		if e.Name == "libx264" && e.Available {
			found = true
		}
	}
	if !found {
		t.Errorf("encoders %+v lack libx264", r.Encoders)
	}
}

// TestProbeDriverWithoutLibraries fakes /proc/driver/nvidia: a driver is
// "present" but its user-space libraries are not loadable, as in a
// container started without the `video` capability: exit code 1.
func TestProbeDriverWithoutLibraries(t *testing.T) {
	if !Compiled {
		t.Skip("needs cgo")
	}
	if _, err := os.Stat("/proc/driver/nvidia/version"); err == nil {
		t.Skip("this machine has an NVIDIA driver")
	}
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "driver", "nvidia"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "driver", "nvidia", "version"), []byte("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := Probe(context.Background(), ProbeOptions{ProcRoot: proc, DevRoot: t.TempDir(), Timeout: testwait.Timeout(30 * time.Second)})
	if r.ExitCode != ExitNVENCUnusable || !r.Driver.Present || !strings.Contains(r.Driver.Version, "550.54.15") {
		t.Fatalf("exit %d driver %+v", r.ExitCode, r.Driver)
	}
	if !strings.HasPrefix(r.Verdict, "library missing: container lacks the `video` driver capability") {
		t.Errorf("verdict %q", r.Verdict)
	}
}

func TestVerdict(t *testing.T) {
	t.Parallel()
	present := Driver{Present: true}
	libsOK := []Library{{Name: "libcuda.so.1", Loadable: true}, {Name: "libnvidia-encode.so.1", Loadable: true}}
	unsupported := "[h264_nvenc] OpenEncodeSessionEx failed: unsupported device (2): (no details)"
	cases := []struct {
		r      ProbeReport
		code   int
		prefix string
	}{
		{ProbeReport{Compiled: true, Driver: present, Libraries: libsOK, Functional: []FunctionalProbe{{Backend: "h264_nvenc", OK: true}}, Fallback: map[string]string{"h264": "h264_nvenc"}}, 0, "NVENC works"},
		{ProbeReport{Compiled: true, Driver: present, Libraries: libsOK, Functional: []FunctionalProbe{{Backend: "h264_nvenc", Error: "x", Reason: (Attempt{Error: "x", Log: []string{unsupported}}).Reason()}}, Fallback: map[string]string{"h264": "libx264"}}, 1, "GPU without NVENC"},
		{ProbeReport{Compiled: true, Driver: present, Libraries: []Library{{Name: "libnvidia-encode.so.1", Error: "not found"}}}, 1, "library missing: container lacks the `video` driver capability"},
		{ProbeReport{Compiled: true}, 2, "no NVIDIA driver"},
		{ProbeReport{Compiled: false}, 2, "encoding is not compiled in"},
		{ProbeReport{Compiled: false, Driver: present}, 1, "encoding is not compiled in"},
	}
	for i, c := range cases {
		code, v := verdict(c.r)
		if code != c.code || !strings.HasPrefix(v, c.prefix) {
			t.Errorf("case %d: %d %q, want %d %q...", i, code, v, c.code, c.prefix)
		}
	}
	// The GPU-without-NVENC verdict carries FFmpeg's line verbatim.
	_, v := verdict(cases[1].r)
	if !strings.Contains(v, unsupported) {
		t.Errorf("verdict %q lacks the FFmpeg line", v)
	}
}
