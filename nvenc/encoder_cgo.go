//go:build cgo

package nvenc

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/asticode/go-astiav"

	"github.com/sdr-os/sdr-caddy/frame"
)

// Compiled reports whether this build can encode (it was built with cgo).
const Compiled = true

// Encoder is one open FFmpeg encoder. It is not safe for concurrent use:
// one goroutine feeds it.
type Encoder struct {
	cfg      Config
	backend  string
	attempts []Attempt

	cc     *astiav.CodecContext
	frame  *astiav.Frame
	pkt    *astiav.Packet
	scaler *scaler // nil when the backend takes the input format directly
	pts    int64
	jpegQ  int

	spsPatched bool
}

// Open opens the first backend of the preference order that works for cfg
// (defaults applied). Every backend tried is reported by Attempts, with
// FFmpeg's own words for the failures.
func Open(cfg Config) (*Encoder, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	backends := cfg.Backends
	if len(backends) == 0 {
		backends = DefaultBackends(cfg.Codec)
	}
	var attempts []Attempt
	for _, b := range backends {
		e := &Encoder{cfg: cfg, backend: b}
		log, err := capturing(func() error { return e.open() })
		a := Attempt{Backend: b, Log: log}
		if err != nil {
			e.Close()
			a.Error = err.Error()
			attempts = append(attempts, a)
			continue
		}
		attempts = append(attempts, a)
		e.attempts = attempts
		return e, nil
	}
	return nil, &OpenError{Config: cfg, Attempts: attempts}
}

func (e *Encoder) open() error {
	cfg := e.cfg
	codec := astiav.FindEncoderByName(e.backend)
	if codec == nil {
		return fmt.Errorf("encoder %s is not in the linked FFmpeg", e.backend)
	}
	in := pixelFormat(cfg.Input)
	formats := codec.PixelFormats()
	has := func(f astiav.PixelFormat) bool {
		for _, x := range formats {
			if x == f {
				return true
			}
		}
		return false
	}
	// NVENC reads RGBA/BGRA directly as RGB0/BGR0 (the alpha byte is ignored).
	encFmt := astiav.PixelFormatNone
	switch {
	case cfg.Codec == frame.CodecJPEG:
		encFmt = astiav.PixelFormatYuvj420P
	case has(in):
		encFmt = in
	case in == astiav.PixelFormatRgba && has(astiav.PixelFormatRgb0):
		encFmt = astiav.PixelFormatRgb0
	case in == astiav.PixelFormatBgra && has(astiav.PixelFormatBgr0):
		encFmt = astiav.PixelFormatBgr0
	case has(astiav.PixelFormatYuv420P):
		encFmt = astiav.PixelFormatYuv420P
	default:
		return fmt.Errorf("encoder %s takes neither %s nor yuv420p", e.backend, in)
	}
	direct := encFmt == in || (encFmt == astiav.PixelFormatRgb0 && in == astiav.PixelFormatRgba) ||
		(encFmt == astiav.PixelFormatBgr0 && in == astiav.PixelFormatBgra)

	e.cc = astiav.AllocCodecContext(codec)
	if e.cc == nil {
		return fmt.Errorf("allocating codec context for %s", e.backend)
	}
	e.cc.SetWidth(cfg.Width)
	e.cc.SetHeight(cfg.Height)
	e.cc.SetPixelFormat(encFmt)
	e.cc.SetTimeBase(astiav.NewRational(1, cfg.FPS))
	e.cc.SetFramerate(astiav.NewRational(cfg.FPS, 1))
	e.cc.SetSampleAspectRatio(astiav.NewRational(1, 1))

	opts := e.options()
	d := astiav.NewDictionary()
	defer d.Free()
	for _, kv := range opts {
		if err := d.Set(kv[0], kv[1], 0); err != nil {
			return fmt.Errorf("setting %s option %s=%s: %w", e.backend, kv[0], kv[1], err)
		}
	}
	if err := e.cc.Open(codec, d); err != nil {
		return fmt.Errorf("opening %s at %dx%d %s: %w", e.backend, cfg.Width, cfg.Height, encFmt, err)
	}
	// Options the encoder did not know are left in the dictionary.
	if left := d.Get("", nil, astiav.NewDictionaryFlags(astiav.DictionaryFlagIgnoreSuffix)); left != nil {
		return fmt.Errorf("encoder %s does not know option %s", e.backend, left.Key())
	}

	e.frame = astiav.AllocFrame()
	e.frame.SetWidth(cfg.Width)
	e.frame.SetHeight(cfg.Height)
	if direct {
		e.frame.SetPixelFormat(in)
	} else {
		e.frame.SetPixelFormat(encFmt)
		s, err := newScaler(cfg.Width, cfg.Height, in, encFmt)
		if err != nil {
			return err
		}
		e.scaler = s
	}
	if encFmt == astiav.PixelFormatYuvj420P {
		e.frame.SetColorRange(astiav.ColorRangeJpeg)
	}
	if err := e.frame.AllocBuffer(32); err != nil {
		return fmt.Errorf("allocating %dx%d frame: %w", cfg.Width, cfg.Height, err)
	}
	e.pkt = astiav.AllocPacket()
	return nil
}

// options are the private and generic AVOptions for the backend.
func (e *Encoder) options() [][2]string {
	cfg := e.cfg
	bps := strconv.Itoa(cfg.BitrateKbps * 1000)
	buf := strconv.Itoa(cfg.BitrateKbps * 1000 / 2) // VBV of 500 ms
	gop := strconv.Itoa(cfg.GOP)
	profile := "baseline"
	switch cfg.Profile {
	case ProfileMain:
		profile = "main"
	case ProfileHigh:
		profile = "high"
	}
	var o [][2]string
	switch e.backend {
	case "h264_nvenc", "hevc_nvenc":
		p, _ := nvencPreset(cfg.Preset)
		o = [][2]string{
			{"preset", p}, {"tune", "ull"}, {"zerolatency", "1"}, {"delay", "0"},
			{"rc", "cbr"}, {"b", bps}, {"maxrate", bps}, {"bufsize", buf},
			{"g", gop}, {"bf", "0"}, {"forced-idr", "1"},
		}
		if e.backend == "h264_nvenc" {
			o = append(o, [2]string{"profile", profile})
		} else {
			o = append(o, [2]string{"profile", "main"})
		}
		if cfg.IntraRefresh {
			o = append(o, [2]string{"intra-refresh", "1"})
		}
	case "libx264":
		o = [][2]string{
			{"preset", x264Preset(cfg.Preset)}, {"tune", "zerolatency"}, {"profile", profile},
			{"b", bps}, {"maxrate", bps}, {"bufsize", buf},
			{"g", gop}, {"bf", "0"}, {"sc_threshold", "0"}, {"forced-idr", "1"},
			// Sliced threads: frame threads would hold pictures back.
			{"thread_type", "slice"},
		}
		if cfg.IntraRefresh {
			o = append(o, [2]string{"intra-refresh", "1"})
		}
		o = append(o, [2]string{"threads", threads(cfg.Threads)})
	case "libx265":
		params := "bframes=0:repeat-headers=1:open-gop=0:log-level=error"
		if cfg.IntraRefresh {
			params += ":intra-refresh=1"
		}
		o = [][2]string{
			{"preset", x264Preset(cfg.Preset)}, {"tune", "zerolatency"},
			{"b", bps}, {"maxrate", bps}, {"bufsize", buf},
			{"g", gop}, {"forced-idr", "1"}, {"x265-params", params},
		}
		o = append(o, [2]string{"threads", threads(cfg.Threads)})
	case "mjpeg":
		q := jpegQScale(cfg.JPEGQuality)
		e.jpegQ = q * 118 // FF_QP2LAMBDA
		o = [][2]string{
			{"flags", "+qscale"}, {"global_quality", strconv.Itoa(e.jpegQ)},
			{"qmin", strconv.Itoa(q)}, {"qmax", strconv.Itoa(q)},
			{"thread_type", "slice"},
		}
		o = append(o, [2]string{"threads", threads(cfg.Threads)})
	}
	return o
}

// SPSPatched reports whether the backend's SPS lacked VUI
// bitstream_restriction with max_num_reorder_frames = 0 and the encoder
// rewrote it (see PatchSPS).
func (e *Encoder) SPSPatched() bool { return e.spsPatched }

// Config is the configuration the encoder runs with, defaults applied.
func (e *Encoder) Config() Config { return e.cfg }

// Backend is the FFmpeg encoder in use.
func (e *Encoder) Backend() string { return e.backend }

// Attempts lists every backend tried, the one in use last.
func (e *Encoder) Attempts() []Attempt { return append([]Attempt(nil), e.attempts...) }

// ErrPictureMismatch is returned by Encode for a picture whose format or
// size is not the encoder's; open a new encoder for it.
var ErrPictureMismatch = errors.New("picture format or size differs from the encoder's")

// Encode encodes one picture; with keyframe set, it becomes an IDR. The
// low-latency settings make it one picture in, one access unit out; a
// backend that still holds pictures back returns no packet for them.
func (e *Encoder) Encode(p Picture, keyframe bool) ([]Packet, error) {
	if e.cc == nil {
		return nil, errors.New("encoding: encoder is closed")
	}
	if p.Format != e.cfg.Input || p.Width != e.cfg.Width || p.Height != e.cfg.Height {
		return nil, fmt.Errorf("encoding %s %dx%d with a %s %dx%d encoder: %w", p.Format, p.Width, p.Height, e.cfg.Input, e.cfg.Width, e.cfg.Height, ErrPictureMismatch)
	}
	planes, strides, err := p.planes()
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	if e.scaler != nil {
		err = e.scaler.scale(e.frame, planes, strides)
	} else {
		err = fillFrame(e.frame, planes, strides)
	}
	if err != nil {
		return nil, err
	}
	e.frame.SetPts(e.pts)
	e.pts++
	if keyframe {
		e.frame.SetPictureType(astiav.PictureTypeI)
	} else {
		e.frame.SetPictureType(astiav.PictureTypeNone)
	}
	if e.jpegQ > 0 {
		setQuality(e.frame, e.jpegQ)
	}
	if err := e.cc.SendFrame(e.frame); err != nil {
		return nil, fmt.Errorf("sending frame %d to %s: %w", e.pts-1, e.backend, err)
	}
	var out []Packet
	for {
		err := e.cc.ReceivePacket(e.pkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("receiving packet from %s: %w", e.backend, err)
		}
		data := e.pkt.Data()
		key := e.pkt.Flags().Has(astiav.PacketFlagKey)
		e.pkt.Unref()
		p := Packet{Data: data, Keyframe: e.isKeyframe(data, key)}
		if p.Keyframe && e.cfg.Codec == frame.CodecH264 {
			patched, changed, err := patchAccessUnit(p.Data)
			if err != nil {
				return out, fmt.Errorf("checking the sps of %s: %w", e.backend, err)
			}
			if changed {
				p.Data = patched
				e.spsPatched = true
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// isKeyframe decides from the bitstream: an IDR NAL unit for H.264/HEVC.
func (e *Encoder) isKeyframe(data []byte, flagged bool) bool {
	switch e.cfg.Codec {
	case frame.CodecJPEG:
		return true
	case frame.CodecH264:
		for _, n := range SplitNALUnits(data) {
			if len(n) > 0 && n[0]&0x1f == 5 {
				return true
			}
		}
		return false
	case frame.CodecHEVC:
		for _, n := range SplitNALUnits(data) {
			if len(n) > 0 {
				if t := (n[0] >> 1) & 0x3f; t == 19 || t == 20 {
					return true
				}
			}
		}
		return false
	}
	return flagged
}

// Close frees the encoder. It is safe to call more than once.
func (e *Encoder) Close() {
	if e == nil {
		return
	}
	if e.pkt != nil {
		e.pkt.Free()
		e.pkt = nil
	}
	if e.frame != nil {
		e.frame.Free()
		e.frame = nil
	}
	if e.cc != nil {
		e.cc.Free()
		e.cc = nil
	}
	e.scaler.free()
	e.scaler = nil
}

// threads is the threads option: "auto" (as the ffmpeg command line does;
// libavcodec's own default is one thread) or the configured count.
func threads(n int) string {
	if n <= 0 {
		return "auto"
	}
	return strconv.Itoa(n)
}
