//go:build cgo

package nvenc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/testpattern"
)

func probeFFmpeg(ctx context.Context, o ProbeOptions, r *ProbeReport) {
	r.FFmpeg = ffmpegVersions()
	for _, lib := range []string{"libcuda.so.1", "libnvidia-encode.so.1"} {
		ok, why := dlopen(lib)
		r.Libraries = append(r.Libraries, Library{Name: lib, Loadable: ok, Error: why})
	}
	have := map[string]bool{}
	installLogCallback()
	for _, c := range astiav.Codecs() {
		if c.IsEncoder() {
			have[c.Name()] = true
		}
	}
	for _, codec := range []frame.Codec{frame.CodecH264, frame.CodecHEVC, frame.CodecJPEG} {
		for _, b := range DefaultBackends(codec) {
			r.Encoders = append(r.Encoders, EncoderInfo{Name: b, Codec: codec.String(), Available: have[b], Hardware: IsNVENC(b)})
		}
	}
	if have["av1_nvenc"] {
		r.Encoders = append(r.Encoders, EncoderInfo{Name: "av1_nvenc", Codec: "av1", Available: true, Hardware: true})
	}
	for _, b := range []string{"h264_nvenc", "hevc_nvenc"} {
		codec := frame.CodecH264
		if b == "hevc_nvenc" {
			codec = frame.CodecHEVC
		}
		f := FunctionalProbe{Backend: b}
		if !have[b] {
			f.Error = "not in the linked FFmpeg"
			f.Reason = b + " is not compiled into the linked FFmpeg"
		} else {
			f = functionalProbe(ctx, o.Timeout, Config{Codec: codec, Width: 256, Height: 256, Backends: []string{b}})
		}
		r.Functional = append(r.Functional, f)
		if f.OK {
			r.NVENC = true
		}
	}
	r.Fallback = map[string]string{}
	for _, codec := range []frame.Codec{frame.CodecH264, frame.CodecHEVC, frame.CodecJPEG} {
		f := functionalProbe(ctx, o.Timeout, Config{Codec: codec, Width: 256, Height: 256})
		if f.OK {
			r.Fallback[codec.String()] = f.Backend
		} else {
			r.Fallback[codec.String()] = ""
		}
	}
}

// functionalProbe opens an encoder for cfg and encodes one test-pattern
// frame, within timeout.
func functionalProbe(ctx context.Context, timeout time.Duration, cfg Config) FunctionalProbe {
	start := time.Now()
	done := make(chan FunctionalProbe, 1)
	go func() {
		f := FunctionalProbe{Backend: strings.Join(cfg.Backends, ",")}
		enc, err := Open(cfg)
		if err != nil {
			f.Error = err.Error()
			var oe *OpenError
			if errors.As(err, &oe) && len(oe.Attempts) > 0 {
				a := oe.Attempts[len(oe.Attempts)-1]
				f.Log, f.Reason = a.Log, a.Reason()
			}
			done <- f
			return
		}
		defer enc.Close()
		f.Backend = enc.Backend()
		pat, err := testpattern.New(cfg.Width, cfg.Height, testpattern.I420)
		if err != nil {
			f.Error = err.Error()
			done <- f
			return
		}
		pix := pat.Render(nil, 0, time.Now())
		pkts, err := enc.Encode(Picture{Format: frame.CodecI420, Width: cfg.Width, Height: cfg.Height, Stride: pat.Stride(), Data: pix}, true)
		switch {
		case err != nil:
			f.Error = err.Error()
		case len(pkts) == 0 || len(pkts[0].Data) == 0:
			f.Error = "encoder returned no data for one frame"
		default:
			f.OK = true
			f.Bytes = len(pkts[0].Data)
		}
		done <- f
	}()
	select {
	case f := <-done:
		f.TookMS = time.Since(start).Milliseconds()
		return f
	case <-time.After(timeout):
		return FunctionalProbe{Backend: strings.Join(cfg.Backends, ","), Error: fmt.Sprintf("%v after %s", errProbeTimeout, timeout), TookMS: time.Since(start).Milliseconds()}
	case <-ctx.Done():
		return FunctionalProbe{Backend: strings.Join(cfg.Backends, ","), Error: ctx.Err().Error(), TookMS: time.Since(start).Milliseconds()}
	}
}
