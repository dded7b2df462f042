// Package nvenc encodes raw frames to H.264, HEVC or JPEG through FFmpeg
// (go-astiav v0.16.0, cgo), preferring NVIDIA's NVENC and falling back to
// the software encoders: h264_nvenc then libx264, hevc_nvenc then libx265,
// mjpeg for JPEG. It reports which backend it uses and why a better one was
// not, probes what the machine offers (Probe), and runs an encoding Session
// that turns a raw input (the raw-frame ring or a test pattern) into a
// frame.Source.
//
// Built without cgo the package still compiles: Open returns ErrNotCompiled
// and Probe says that encoding is not compiled in.
//
// The package imports nothing from Caddy.
package nvenc

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/sdr-os/sdr-caddy/frame"
)

// ErrNotCompiled is returned by Open in a build without cgo.
var ErrNotCompiled = errors.New("encoding is not compiled in: this binary was built without cgo (CGO_ENABLED=0); rebuild with cgo and FFmpeg's development libraries to encode")

// Profiles of H.264 the encoder can be asked for.
const (
	ProfileConstrainedBaseline = "constrained_baseline"
	ProfileMain                = "main"
	ProfileHigh                = "high"
)

// Defaults of Config.
const (
	DefaultFPS         = 30
	DefaultBitrateKbps = 4000
	DefaultGOP         = 60
	DefaultPreset      = "p1"
	DefaultJPEGQuality = 80
)

// Config says what to encode and how. The zero value of every field but the
// picture size means its default.
type Config struct {
	// Codec is frame.CodecH264 (default), CodecHEVC or CodecJPEG.
	Codec frame.Codec `json:"codec,omitempty"`
	// Width and Height of the pictures; each must be even.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Input is the raw pixel format of the pictures: frame.CodecRGBA,
	// CodecBGRA, CodecNV12, CodecI420 or CodecRGB24. Default I420.
	Input frame.Codec `json:"input,omitempty"`
	// FPS is the nominal frame rate (rate control and time base).
	FPS int `json:"fps,omitempty"`
	// BitrateKbps is the constant bit rate in kbit/s (H.264, HEVC).
	BitrateKbps int `json:"bitrate_kbps,omitempty"`
	// GOP is the number of frames from one IDR to the next; a forced IDR
	// starts a new GOP. Default 60.
	GOP int `json:"gop,omitempty"`
	// Preset is the NVENC preset p1 (fastest) .. p7; the software
	// encoders map it onto their own scale (p1 = ultrafast). An x264
	// preset name (ultrafast .. veryslow) is taken as well.
	Preset string `json:"preset,omitempty"`
	// Profile of H.264: constrained_baseline (default, avc1.42E0xx, what
	// every browser decodes), main or high. Ignored for HEVC and JPEG.
	Profile string `json:"profile,omitempty"`
	// IntraRefresh spreads intra blocks over the GOP instead of sending
	// whole IDR frames periodically (forced IDRs are still whole IDRs).
	IntraRefresh bool `json:"intra_refresh,omitempty"`
	// JPEGQuality is 1 (worst) .. 100 (best); default 80.
	JPEGQuality int `json:"jpeg_quality,omitempty"`
	// Threads for the software encoders; 0 lets FFmpeg choose.
	Threads int `json:"threads,omitempty"`
	// Backends, when set, replaces the preference order, e.g.
	// ["libx264"] to never try NVENC.
	Backends []string `json:"backends,omitempty"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Codec == 0 {
		c.Codec = frame.CodecH264
	}
	if c.Input == 0 {
		c.Input = frame.CodecI420
	}
	if c.FPS == 0 {
		c.FPS = DefaultFPS
	}
	if c.BitrateKbps == 0 {
		c.BitrateKbps = DefaultBitrateKbps
	}
	if c.GOP == 0 {
		c.GOP = DefaultGOP
	}
	if c.Preset == "" {
		c.Preset = DefaultPreset
	}
	if c.Profile == "" {
		c.Profile = ProfileConstrainedBaseline
	}
	if c.JPEGQuality == 0 {
		c.JPEGQuality = DefaultJPEGQuality
	}
	return c
}

// Validate reports the first problem of a config with defaults applied.
func (c Config) Validate() error {
	switch c.Codec {
	case frame.CodecH264, frame.CodecHEVC, frame.CodecJPEG:
	default:
		return fmt.Errorf("encoder codec %s: want h264, hevc or jpeg", c.Codec)
	}
	switch c.Input {
	case frame.CodecRGBA, frame.CodecBGRA, frame.CodecNV12, frame.CodecI420, frame.CodecRGB24:
	default:
		return fmt.Errorf("encoder input pixel format %s: want rgba, bgra, nv12, i420 or rgb24", c.Input)
	}
	if c.Width < 16 || c.Height < 16 || c.Width > 8192 || c.Height > 8192 || c.Width%2 != 0 || c.Height%2 != 0 {
		return fmt.Errorf("encoder picture size %dx%d: want even sizes from 16x16 to 8192x8192", c.Width, c.Height)
	}
	if c.FPS < 1 || c.FPS > 240 {
		return fmt.Errorf("encoder fps %d: want 1..240", c.FPS)
	}
	if c.BitrateKbps < 16 || c.BitrateKbps > 500000 {
		return fmt.Errorf("encoder bitrate %d kbit/s: want 16..500000", c.BitrateKbps)
	}
	if c.GOP < 1 || c.GOP > 100000 {
		return fmt.Errorf("encoder gop %d: want 1..100000", c.GOP)
	}
	if _, err := nvencPreset(c.Preset); err != nil {
		return err
	}
	switch c.Profile {
	case ProfileConstrainedBaseline, ProfileMain, ProfileHigh:
	default:
		return fmt.Errorf("encoder profile %q: want constrained_baseline, main or high", c.Profile)
	}
	if c.JPEGQuality < 1 || c.JPEGQuality > 100 {
		return fmt.Errorf("encoder jpeg quality %d: want 1..100", c.JPEGQuality)
	}
	if c.Threads < 0 || c.Threads > 64 {
		return fmt.Errorf("encoder threads %d: want 0..64", c.Threads)
	}
	for _, b := range c.Backends {
		if !backendFor(c.Codec, b) {
			return fmt.Errorf("encoder backend %q cannot encode %s (known: %s)", b, c.Codec, strings.Join(DefaultBackends(c.Codec), ", "))
		}
	}
	return nil
}

// DefaultBackends is the preference order for a codec.
func DefaultBackends(codec frame.Codec) []string {
	switch codec {
	case frame.CodecH264:
		return []string{"h264_nvenc", "libx264"}
	case frame.CodecHEVC:
		return []string{"hevc_nvenc", "libx265"}
	case frame.CodecJPEG:
		return []string{"mjpeg"}
	}
	return nil
}

func backendFor(codec frame.Codec, name string) bool {
	for _, b := range DefaultBackends(codec) {
		if b == name {
			return true
		}
	}
	return false
}

// IsNVENC reports whether a backend name is one of NVIDIA's encoders.
func IsNVENC(backend string) bool { return strings.HasSuffix(backend, "_nvenc") }

// presets maps x264 preset names onto NVENC's p1..p7 and back.
var x264Presets = []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"}

// nvencPreset returns the NVENC preset (p1..p7) for a preset name of either scale.
func nvencPreset(p string) (string, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	if len(p) == 2 && p[0] == 'p' && p[1] >= '1' && p[1] <= '7' {
		return p, nil
	}
	for i, x := range x264Presets {
		if p == x {
			return fmt.Sprintf("p%d", i+1), nil
		}
	}
	if p == "slower" || p == "veryslow" || p == "placebo" {
		return "p7", nil
	}
	return "", fmt.Errorf("encoder preset %q: want p1..p7 or an x264 preset (ultrafast .. veryslow)", p)
}

// x264Preset returns the x264 preset for a preset name of either scale.
func x264Preset(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	if len(p) == 2 && p[0] == 'p' && p[1] >= '1' && p[1] <= '7' {
		return x264Presets[p[1]-'1']
	}
	return p
}

// jpegQScale maps a quality of 1..100 onto FFmpeg's qscale 31..2.
func jpegQScale(q int) int {
	return 2 + (100-q)*29/99
}

// Picture is one raw frame: the pixel format, size and first-plane stride
// of the raw-ring descriptor (docs/protocol.md, "Raw-frame ring") and the planes. For
// I420 the chroma planes follow the luma plane with a stride of
// (Stride+1)/2 and (Height+1)/2 rows each; for NV12 the interleaved chroma
// plane follows with a stride of Stride.
type Picture struct {
	Format frame.Codec
	Width  int
	Height int
	Stride int
	Data   []byte
}

// planes splits the picture into its planes and their strides.
func (p Picture) planes() (planes [3][]byte, strides [3]int, err error) {
	h2 := (p.Height + 1) / 2
	need := 0
	switch p.Format {
	case frame.CodecRGBA, frame.CodecBGRA:
		if p.Stride < p.Width*4 {
			break
		}
		need = p.Stride * p.Height
		planes[0], strides[0] = p.Data[:min(need, len(p.Data))], p.Stride
	case frame.CodecRGB24:
		if p.Stride < p.Width*3 {
			break
		}
		need = p.Stride * p.Height
		planes[0], strides[0] = p.Data[:min(need, len(p.Data))], p.Stride
	case frame.CodecI420:
		if p.Stride < p.Width {
			break
		}
		cs := (p.Stride + 1) / 2
		need = p.Stride*p.Height + 2*cs*h2
		if len(p.Data) >= need {
			y := p.Stride * p.Height
			planes = [3][]byte{p.Data[:y], p.Data[y : y+cs*h2], p.Data[y+cs*h2 : need]}
			strides = [3]int{p.Stride, cs, cs}
		}
	case frame.CodecNV12:
		if p.Stride < p.Width {
			break
		}
		need = p.Stride*p.Height + p.Stride*h2
		if len(p.Data) >= need {
			y := p.Stride * p.Height
			planes[0], planes[1] = p.Data[:y], p.Data[y:need]
			strides[0], strides[1] = p.Stride, p.Stride
		}
	default:
		return planes, strides, fmt.Errorf("raw picture format %s: want rgba, bgra, nv12, i420 or rgb24", p.Format)
	}
	if need == 0 {
		return planes, strides, fmt.Errorf("raw %s picture %dx%d: stride %d too small", p.Format, p.Width, p.Height, p.Stride)
	}
	if len(p.Data) < need {
		return planes, strides, fmt.Errorf("raw %s picture %dx%d stride %d: %d bytes, need %d", p.Format, p.Width, p.Height, p.Stride, len(p.Data), need)
	}
	return planes, strides, nil
}

// Packet is one encoded access unit.
type Packet struct {
	// Data is the access unit: Annex-B NAL units for H.264/HEVC, a JPEG
	// image for JPEG.
	Data []byte
	// Keyframe is set on IDR frames (and on every JPEG).
	Keyframe bool
}

// Attempt is one backend that was tried while opening an encoder.
type Attempt struct {
	// Backend is the FFmpeg encoder name.
	Backend string `json:"backend"`
	// Error says why it was not used; empty for the one that was.
	Error string `json:"error,omitempty"`
	// Log holds what FFmpeg logged (warnings and errors) while opening it,
	// verbatim.
	Log []string `json:"log,omitempty"`
}

// Reason summarizes why a backend was passed over, for logs and metrics.
func (a Attempt) Reason() string {
	if a.Error == "" {
		return ""
	}
	if r := classifyNVENCLog(a.Log); r != "" {
		return r
	}
	return a.Error
}

// classifyNVENCLog turns FFmpeg's NVENC messages into the reason an
// operator acts on.
func classifyNVENCLog(lines []string) string {
	for _, l := range lines {
		ll := strings.ToLower(l)
		switch {
		case strings.Contains(ll, "libnvidia-encode"):
			return "library missing: container lacks the `video` driver capability (libnvidia-encode.so.1 cannot be loaded; set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video): " + strings.TrimSpace(l)
		case strings.Contains(ll, "unsupported device"):
			return "GPU without NVENC (datacenter GPUs such as A100/H100/H200 have no video encoder): " + strings.TrimSpace(l)
		case strings.Contains(ll, "libcuda") || strings.Contains(ll, "no cuda-capable device") || strings.Contains(ll, "cuinit"):
			return "no usable CUDA device: " + strings.TrimSpace(l)
		case strings.Contains(ll, "minimum required nvidia driver"):
			return "NVIDIA driver too old for this FFmpeg's NVENC: " + strings.TrimSpace(l)
		}
	}
	return ""
}

var logger atomic.Pointer[slog.Logger]

// SetLogger sets where FFmpeg's warnings and errors go outside of an
// encoder's opening (default slog.Default()).
func SetLogger(l *slog.Logger) { logger.Store(l) }

func ffmpegLog(isErr bool, line string) {
	l := logger.Load()
	if l == nil {
		l = slog.Default()
	}
	if isErr {
		l.Error("ffmpeg", "msg", line)
	} else {
		l.Warn("ffmpeg", "msg", line)
	}
}

// OpenError is returned by Open when no backend works; it lists each
// attempt with FFmpeg's own words.
type OpenError struct {
	Config   Config
	Attempts []Attempt
}

func (e *OpenError) Error() string {
	var reasons []string
	for _, a := range e.Attempts {
		reasons = append(reasons, a.Backend+": "+a.Reason())
	}
	return fmt.Sprintf("opening a %s encoder at %dx%d: no backend works (%s)", e.Config.Codec, e.Config.Width, e.Config.Height, strings.Join(reasons, "; "))
}
