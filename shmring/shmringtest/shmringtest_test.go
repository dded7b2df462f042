package shmringtest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

func TestWriteCommitsOneFrame(t *testing.T) {
	t.Parallel()
	w := NewWriter(t, "", 1<<16)
	for i, key := range []bool{true, false, false} {
		seq := w.Write(t, key, 100+i)
		in, err := shmring.Inspect(w.Path, true)
		if err != nil {
			t.Fatal(err)
		}
		h := in.Header
		switch {
		case !in.Verified:
			t.Fatalf("frame %d: %s", i, in.Problem)
		case seq != uint64(i+1) || h.FrameSeq != seq:
			t.Fatalf("frame %d: Write returned %d, the ring holds %d, want %d", i, seq, h.FrameSeq, i+1)
		case h.Keyframe() != key || h.Codec != shmring.CodecH264 || h.Size != uint32(100+i):
			t.Fatalf("frame %d: keyframe %v codec %v size %d, want %v H.264 %d", i, h.Keyframe(), h.Codec, h.Size, key, 100+i)
		case in.PayloadCRC != shmring.Checksum(bytes.Repeat([]byte{byte(i)}, 100+i)):
			t.Fatalf("frame %d: payload is not %d bytes of %d", i, 100+i, i)
		}
	}
}

// read runs a reader of the ring at path until the test ends and hands on
// every frame it delivers.
func read(t *testing.T, path string) <-chan shmring.Frame {
	r, err := shmring.NewReader(shmring.ReaderConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	frames := make(chan shmring.Frame, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx, func(f shmring.Frame) {
			select {
			case frames <- f:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return frames
}

func TestStartPlaysTheCadenceAndStops(t *testing.T) {
	t.Parallel()
	w := NewWriter(t, "", 1<<16)
	frames := read(t, w.Path)
	c := Cadence{Period: 2 * time.Millisecond, GOP: 5, Size: 64}
	stop := w.Start(t, c)
	// The reader may miss a frame on a busy machine: judge each by its
	// frame_seq, the frame's index plus one.
	for n := 0; n < 12; {
		f := testwait.Recv(t, frames, "a frame of the cadence")
		i := int(f.Header.FrameSeq - 1)
		if key := i%c.GOP == 0; f.Header.Keyframe() != key {
			t.Fatalf("frame %d: keyframe %v, want %v", i, f.Header.Keyframe(), key)
		}
		if !bytes.Equal(f.Payload, bytes.Repeat([]byte{byte(i)}, c.Size)) {
			t.Fatalf("frame %d: payload % x, want %d bytes of %d", i, f.Payload[:4], c.Size, i)
		}
		n++
	}
	stop()
	last := w.Ring().Sequence()
	if in, err := shmring.Inspect(w.Path, true); err != nil || in.Sequence != last {
		t.Fatalf("after stop the ring holds commit %d (%v), the writer's last is %d", in.Sequence, err, last)
	}
	stop() // a second stop, and the one at cleanup, do nothing

	// Started again, the cadence starts over with a keyframe. The next
	// frame comes an hour later: the ring holds the first one until the
	// reader, however late a busy machine runs it, has polled it.
	c.Period = time.Hour
	w.Start(t, c)
	for {
		f := testwait.Recv(t, frames, "a frame after the restart")
		if f.Sequence > last {
			if !f.Header.Keyframe() || !bytes.Equal(f.Payload, bytes.Repeat([]byte{0}, c.Size)) {
				t.Fatalf("first frame after the restart: keyframe %v, payload % x; want the cadence's frame 0, a keyframe", f.Header.Keyframe(), f.Payload[:4])
			}
			break
		}
	}
}

func TestStartWithPayloads(t *testing.T) {
	t.Parallel()
	w := NewWriter(t, "", 1<<16)
	frames := read(t, w.Path)
	units := [][]byte{[]byte("zero"), []byte("one"), []byte("two")}
	w.Start(t, Cadence{Period: time.Millisecond, Payload: func(i int) []byte { return units[i%len(units)] }})
	for n := 0; n < 6; n++ {
		f := testwait.Recv(t, frames, "a frame")
		if want := units[(f.Header.FrameSeq-1)%3]; !bytes.Equal(f.Payload, want) || f.Header.Keyframe() {
			t.Fatalf("frame %d: %q keyframe %v, want %q and no keyframe (GOP 0)", f.Header.FrameSeq, f.Payload, f.Header.Keyframe(), want)
		}
	}
}

func TestReadVideoSkipsOtherMessages(t *testing.T) {
	t.Parallel()
	want := shmring.Header{FrameSeq: 7, FrameID: 99, Codec: shmring.CodecH264, Flags: shmring.FlagKeyframe, Size: 5}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		tel, _ := wire.AppendTelemetry(nil, "telemetry.x", []byte("{}"))
		_ = c.WriteMessage(websocket.BinaryMessage, tel)
		_ = c.WriteMessage(websocket.BinaryMessage, wire.AppendVideo(nil, want, []byte("hello")))
		_, _, _ = c.ReadMessage() // until the client goes
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
	h, p := ReadVideo(t, c)
	if h.FrameSeq != 7 || h.FrameID != 99 || !h.Keyframe() || string(p) != "hello" {
		t.Fatalf("ReadVideo = %+v %q, want frame 7, id 99, keyframe, hello", h, p)
	}
}
