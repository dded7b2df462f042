package shmring

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

func TestInspect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Inspect(filepath.Join(dir, "absent"), true); err == nil {
		t.Error("absent file inspected without error")
	}
	path := filepath.Join(dir, "frames")
	w := createWriter(t, path, 8192)
	in, err := Inspect(path, true)
	if err != nil || in.Verified || in.Sequence != 0 {
		t.Fatalf("empty ring: %+v %v", in, err)
	}
	var buf bytes.Buffer
	in.WriteText(&buf)
	if !strings.Contains(buf.String(), "EMPTY") {
		t.Errorf("empty ring text:\n%s", buf.String())
	}
	h, _ := w.WriteFrame(Header{Flags: FlagKeyframe, Codec: CodecH264}, payloadFor(1, 500))
	in, err = Inspect(path, true)
	if err != nil || !in.Verified || in.Header != h || in.PayloadCRC != h.CRC32 || in.FrameAge <= 0 || in.Size != 8192 {
		t.Fatalf("one frame: %+v %v", in, err)
	}
	buf.Reset()
	in.WriteText(&buf)
	for _, want := range []string{"status    OK", "KEYFRAME", "codec h264", "frame_seq 1"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
	// Corrupt the payload in place: the CRC check must say so.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xfe}, OffPayload+10)
	f.Close()
	in, _ = Inspect(path, true)
	if in.Verified || !strings.Contains(in.Problem, "CRC") {
		t.Errorf("corrupt payload: %+v", in)
	}
	if in, _ = Inspect(path, false); !in.Verified {
		t.Errorf("corrupt payload with CRC off: %+v", in)
	}
	// A raw frame is described with its layout.
	p, _, _ := NewRawPayload(CodecNV12, RawDescriptor{Width: 16, Height: 8, Stride: 16})
	w.WriteFrame(Header{Codec: CodecNV12}, p)
	if in, _ = Inspect(path, true); !in.Verified || in.Raw == nil || len(in.Raw.Planes) != 2 {
		t.Errorf("raw frame: %+v", in)
	}
	w.WriteFrame(Header{Codec: CodecNV12}, p[:len(p)-1])
	if in, _ = Inspect(path, true); in.Verified || !strings.Contains(in.Problem, "layout needs") {
		t.Errorf("short raw frame: %+v", in)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := uint64(1); ctx.Err() == nil; i++ {
			<-tick.C
			flags := uint16(0)
			if i%10 == 1 {
				flags = FlagKeyframe
			}
			w.WriteFrame(Header{Flags: flags, Codec: CodecHEVC}, payloadFor(i, 1000))
		}
	}()
	var mu sync.Mutex
	var windows []Window
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, ReaderConfig{Path: path}, 300*time.Millisecond, func(w Window) {
			mu.Lock()
			windows = append(windows, w)
			n := len(windows)
			mu.Unlock()
			if n == 5 {
				cancel()
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-testwait.After(20 * time.Second):
		t.Fatal("Watch did not end")
	}
	last := windows[len(windows)-1]
	if last.FPS() < 10 || last.FPS() > 200 || last.KeyframeInterval != 10 || last.Codec != CodecHEVC ||
		last.MaxSize != 1000 || !last.Total.Attached {
		t.Errorf("last window %+v (fps %.1f)", last, last.FPS())
	}
	if s := last.String(); !strings.Contains(s, "keyint=10") || !strings.Contains(s, "codec=hevc") {
		t.Errorf("window line %q", s)
	}
	if err := Watch(context.Background(), ReaderConfig{Path: path}, 0, func(Window) {}); err == nil {
		t.Error("zero interval accepted")
	}
}
