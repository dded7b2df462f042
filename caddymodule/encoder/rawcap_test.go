package encoder

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// rawInvalid reads caddy_sdr_encoder_raw_invalid_total of encoder name.
func rawInvalid(t *testing.T, m *encoderMetrics, name string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.invalid.WithLabelValues(name).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

// The raw ring reader of sdr_encoder caps frames too: by default at the
// whole default raw ring (64 MiB), or at max_frame_size. A frame over the
// cap is dropped before any copy and counted as an invalid raw frame; the
// frames after it are read.
func TestEncoderRawRingFrameCap(t *testing.T) {
	t.Parallel()
	const name = "rawcap-test"
	m := encoderMetricsOnce
	path := filepath.Join(t.TempDir(), "raw")
	w, err := shmring.CreateWriter(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	log := slog.New(slog.DiscardHandler)

	r, err := rawRingReader(name, &EncoderConfig{Path: path}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Config().MaxFrameSize; got != shmring.DefaultRawMaxFrameSize {
		t.Errorf("default raw frame cap %d, want %d", got, shmring.DefaultRawMaxFrameSize)
	}

	r, err = rawRingReader(name, &EncoderConfig{Path: path, MaxFrameSize: 1 << 20}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	frames := make(chan shmring.Frame, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, func(f shmring.Frame) { frames <- f }) }()
	defer func() {
		cancel()
		testwait.Recv(t, done, "the raw reader to stop")
	}()

	write := func(c shmring.Codec, wd, ht, stride uint32) {
		t.Helper()
		p, _, err := shmring.NewRawPayload(c, shmring.RawDescriptor{Width: wd, Height: ht, Stride: stride})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteFrame(shmring.Header{Codec: c}, p); err != nil {
			t.Fatal(err)
		}
	}
	write(shmring.CodecI420, 64, 64, 64)
	if f := testwait.Recv(t, frames, "the first raw frame"); f.Header.FrameSeq != 1 {
		t.Fatalf("first frame %d", f.Header.FrameSeq)
	}
	before := rawInvalid(t, m, name)
	write(shmring.CodecRGBA, 1024, 512, 4096) // 2 MiB, over the 1 MiB cap
	testwait.For(t, "the frame over the cap to be counted", func() bool { return rawInvalid(t, m, name) == before+1 })
	write(shmring.CodecI420, 64, 64, 64)
	if f := testwait.Recv(t, frames, "the raw frame after the dropped one"); f.Header.FrameSeq != 3 || f.Gap != 1 {
		t.Fatalf("frame after the dropped one: %d (gap %d), want 3 (gap 1)", f.Header.FrameSeq, f.Gap)
	}
	if st := r.Stats(); st.Oversize != 1 {
		t.Errorf("stats %+v, want Oversize 1", st)
	}
}
