package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"
)

var key = [4]byte{1, 2, 3, 4}

// fragments returns n client frames: a first binary frame (not final) and
// n-1 continuation frames, the last final, with payloads of the given size.
func fragments(n, size int) []byte {
	var b []byte
	payload := bytes.Repeat([]byte{'x'}, size)
	for i := range n {
		op := OpContinuation
		if i == 0 {
			op = OpBinary
		}
		b = AppendClientFrame(b, op, i == n-1, key, payload)
	}
	return b
}

// readGuarded reads stream through GuardReader, one byte at a time or in
// one piece, and returns what came through and the error that ended it.
func readGuarded(t *testing.T, stream []byte, lim FrameLimits, oneByte bool) ([]byte, error) {
	t.Helper()
	var r io.Reader = bytes.NewReader(stream)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	out, err := io.ReadAll(GuardReader(r, NewFrameGuard(lim)))
	return out, err
}

func TestGuardFragments(t *testing.T) {
	t.Parallel()
	lim := FrameLimits{MaxFragments: 8, Rate: -1}
	for _, oneByte := range []bool{false, true} {
		// Payload sizes that use each length form: 7-bit, 16-bit, 64-bit.
		for _, size := range []int{0, 125, 126, 70000} {
			ok := fragments(8, size)
			ok = AppendClientFrame(ok, OpPing, true, key, nil) // control frames between messages
			ok = append(ok, fragments(8, size)...)
			got, err := readGuarded(t, ok, lim, oneByte)
			if err != nil || !bytes.Equal(got, ok) {
				t.Fatalf("size %d, one byte %v: two messages of 8 fragments: %d of %d bytes, %v", size, oneByte, len(got), len(ok), err)
			}
			_, err = readGuarded(t, fragments(9, size), lim, oneByte)
			var le *LimitError
			var pe *ProtocolError
			if !errors.As(err, &le) || le.Reason != ReasonFragments || !errors.As(err, &pe) || pe.Code != CloseMessageTooBig {
				t.Fatalf("size %d, one byte %v: 9 fragments: %v, want a fragments LimitError with code 1009", size, oneByte, err)
			}
		}
	}
}

// Control frames may come between the fragments of a message and do not
// count as fragments.
func TestGuardControlBetweenFragments(t *testing.T) {
	t.Parallel()
	var b []byte
	b = AppendClientFrame(b, OpText, false, key, []byte("a"))
	for range 20 {
		b = AppendClientFrame(b, OpPong, true, key, nil)
	}
	b = AppendClientFrame(b, OpContinuation, true, key, []byte("b"))
	if _, err := readGuarded(t, b, FrameLimits{MaxFragments: 2, Rate: -1}, false); err != nil {
		t.Fatal(err)
	}
}

// An endless message of empty continuation frames, the flood that held a
// core: it ends at the limit, and the reader stays failed.
func TestGuardEndlessContinuation(t *testing.T) {
	t.Parallel()
	b := AppendClientFrame(nil, OpBinary, false, key, nil)
	for range 10000 {
		b = AppendClientFrame(b, OpContinuation, false, key, nil)
	}
	r := GuardReader(bytes.NewReader(b), NewFrameGuard(FrameLimits{}))
	_, err := io.ReadAll(r)
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("endless continuation: %v, want a LimitError", err)
	}
	if n, err2 := r.Read(make([]byte, 10)); n != 0 || err2 != err {
		t.Fatalf("read after the limit: %d, %v; want 0 and the same error", n, err2)
	}
}

func TestGuardFrameRate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := NewFrameGuard(FrameLimits{Rate: 10, Burst: 5})
		for i := range 5 {
			if err := g.Frame(OpPing, true); err != nil {
				t.Fatalf("frame %d of the burst: %v", i, err)
			}
		}
		err := g.Frame(OpBinary, true)
		var le *LimitError
		if !errors.As(err, &le) || le.Reason != ReasonFrameRate || le.Code != ClosePolicyViolation {
			t.Fatalf("frame past the burst: %v, want a frame_rate LimitError with code 1008", err)
		}
		// At the sustained rate a client never runs out.
		g = NewFrameGuard(FrameLimits{Rate: 10, Burst: 5})
		for i := range 100 {
			time.Sleep(100 * time.Millisecond)
			if err := g.Frame(OpBinary, true); err != nil {
				t.Fatalf("frame %d at 10/s: %v", i, err)
			}
		}
		// No limit.
		g = NewFrameGuard(FrameLimits{Rate: -1, Burst: 1})
		for i := range 10000 {
			if err := g.Frame(OpBinary, true); err != nil {
				t.Fatalf("frame %d without a rate limit: %v", i, err)
			}
		}
	})
}

func TestGuardDefaults(t *testing.T) {
	t.Parallel()
	l := FrameLimits{}.filled()
	if l.MaxFragments != DefaultMaxFragments || l.Rate != DefaultFrameRate || l.Burst != DefaultFrameBurst {
		t.Fatalf("defaults %+v", l)
	}
}

func TestGuardSilentSince(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := NewFrameGuard(FrameLimits{})
		r := GuardReader(bytes.NewReader(AppendClientFrame(nil, OpPong, true, key, nil)), g)
		time.Sleep(time.Second)
		pinged := time.Now()
		if !g.SilentSince(pinged) {
			t.Fatal("not silent before anything came")
		}
		time.Sleep(time.Second)
		if _, err := io.ReadAll(r); err != nil {
			t.Fatal(err)
		}
		if g.SilentSince(pinged) {
			t.Fatal("silent after a pong came")
		}
		if !g.SilentSince(time.Now().Add(time.Millisecond)) {
			t.Fatal("not silent since a time after the pong")
		}
	})
}
