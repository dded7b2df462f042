package shmring

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestReaderHeartbeat: Run beats while it waits for an absent file and
// while it polls a mapped one, and AttachError says why it waits until the
// file is mapped.
func TestReaderHeartbeat(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	r, err := NewReader(ReaderConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Heartbeat().IsZero() || r.AttachError() != nil {
		t.Fatalf("before Run: heartbeat %v, attach error %v", r.Heartbeat(), r.AttachError())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, func(Frame) {}) }()
	defer func() { cancel(); <-done }()

	testwait.For(t, "the reader to say the file is absent", func() bool { return errors.Is(r.AttachError(), fs.ErrNotExist) })
	if !WaitingForWriter(r.AttachError()) {
		t.Errorf("an absent file is not waiting for the writer: %v", r.AttachError())
	}
	h := r.Heartbeat()
	testwait.For(t, "a heartbeat while waiting for the file", func() bool { return r.Heartbeat().After(h) })

	w := createWriter(t, path, 1<<16)
	testwait.For(t, "the reader to attach", func() bool { return r.Stats().Attached && r.AttachError() == nil })
	h = r.Heartbeat()
	testwait.For(t, "a heartbeat while polling the mapped file", func() bool { return r.Heartbeat().After(h) })
	if _, err := w.WriteFrame(Header{Codec: CodecH264, Flags: FlagKeyframe}, []byte{1}); err != nil {
		t.Fatal(err)
	}
	h = r.Heartbeat()
	testwait.For(t, "a heartbeat after the frame", func() bool { return r.Heartbeat().After(h) && r.Stats().Frames == 1 })
}

func TestWaitingForWriter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path    string
		waiting bool
	}{{filepath.Join(dir, "absent"), true}, {short, true}, {dir, false}} {
		r, err := NewReader(ReaderConfig{Path: c.path})
		if err != nil {
			t.Fatal(err)
		}
		err = r.attach()
		if err == nil {
			r.detach()
			t.Fatalf("%s mapped", c.path)
		}
		if WaitingForWriter(err) != c.waiting {
			t.Errorf("%s: %v: waiting %t, want %t", c.path, err, !c.waiting, c.waiting)
		}
	}
}
