package shmring

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Inspection is what one look at a ring file finds: what `caddy sdr-ring
// inspect` prints.
type Inspection struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Inode    uint64 `json:"inode"`
	Sequence uint64 `json:"sequence"`
	WriteLen uint64 `json:"write_len"`
	// Header is the frame header in the slot (zero when there is none).
	Header Header `json:"header"`
	// PayloadCRC is the CRC-32 of the payload as read.
	PayloadCRC uint32 `json:"payload_crc"`
	// Verified is true when the slot holds a frame that passes every check.
	Verified bool `json:"verified"`
	// Problem says why the slot holds no usable frame; empty when Verified.
	Problem string `json:"problem,omitempty"`
	// FrameAge is now minus frame_id, when frame_id looks like a Unix-ns
	// commit time (sdr-caddy's writers store one); 0 otherwise.
	FrameAge time.Duration `json:"frame_age_ns,omitempty"`
	// Raw is the layout of a raw-ring frame (codecs 16..31).
	Raw *RawLayout `json:"raw,omitempty"`
}

// Inspect maps the ring file at path and reads the frame committed in it,
// with the reader's checks (CRC unless verifyCRC is false). A slot that a
// writer overwrites during the copy is read again, up to 50 times. The error
// is for a file that cannot be read at all; a file without a usable frame is
// described by Problem.
func Inspect(path string, verifyCRC bool) (Inspection, error) {
	m, err := mapFile(path, false)
	if err != nil {
		return Inspection{Path: path}, err
	}
	defer m.unmap()
	in := Inspection{Path: path, Size: m.id.size, Inode: m.id.ino}
	var res slotRead
	for range 50 {
		var fault bool
		res, fault = readGuarded(m.mem, 0, verifyCRC, 0, nil)
		if fault {
			return in, fmt.Errorf("reading ring %s: %w", path, errFault)
		}
		if res.status != slotTorn && res.status != slotCRC {
			break
		}
		time.Sleep(time.Millisecond)
	}
	in.Sequence, in.WriteLen, in.Header = res.sequence, res.writeLen, res.header
	if res.payload != nil {
		in.PayloadCRC = Checksum(res.payload)
	}
	if err := res.status.err(); err != nil {
		in.Problem = err.Error()
		if res.status == slotWriteLen {
			in.Problem = fmt.Sprintf("%v: %d, file allows %d..%d", err, res.writeLen, HeaderSize, m.id.size-ControlSize)
		}
		return in, nil
	}
	in.Verified = true
	if in.Header.Codec.IsRaw() {
		l, err := ParseRaw(in.Header, res.payload)
		if err != nil {
			in.Verified, in.Problem = false, err.Error()
		} else {
			in.Raw = &l
		}
	}
	in.FrameAge = frameAge(in.Header.FrameID, time.Now())
	return in, nil
}

// frameAge reads frame_id as a Unix-ns time when it lies within a day of now.
func frameAge(id uint64, now time.Time) time.Duration {
	t := time.Unix(0, int64(id))
	if id > 1<<62 || t.Before(now.Add(-24*time.Hour)) || t.After(now.Add(time.Hour)) {
		return 0
	}
	return now.Sub(t)
}

// WriteText prints the inspection for an operator.
func (in Inspection) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("ring      %s (%d bytes, inode %d)\n", in.Path, in.Size, in.Inode)
	ew.printf("sequence  %d\n", in.Sequence)
	if in.Sequence == 0 {
		ew.printf("status    EMPTY: no frame committed yet (is the writer running and pointed at this path?)\n")
		return ew.err
	}
	h := in.Header
	ew.printf("write_len %d\n", in.WriteLen)
	ew.printf("frame     frame_id %d  frame_seq %d  size %d  codec %s  flags 0x%04x%s\n",
		h.FrameID, h.FrameSeq, h.Size, h.Codec, h.Flags, map[bool]string{true: " (KEYFRAME)", false: ""}[h.Keyframe()])
	ew.printf("crc32     header %08x  payload %08x\n", h.CRC32, in.PayloadCRC)
	if in.FrameAge > 0 {
		ew.printf("age       %v (frame_id read as commit time)\n", in.FrameAge.Round(time.Millisecond))
	}
	if in.Raw != nil {
		d := in.Raw.Descriptor
		ew.printf("raw       %dx%d stride %d, %d plane(s), payload %d bytes\n", d.Width, d.Height, d.Stride, len(in.Raw.Planes), in.Raw.PayloadSize)
	}
	if in.Verified {
		ew.printf("status    OK\n")
	} else {
		ew.printf("status    BAD: %s\n", in.Problem)
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// Window is what a watched ring did during one interval: what `caddy
// sdr-ring watch` prints once per interval.
type Window struct {
	Start, End time.Time
	Frames     uint64 // frames delivered in the window
	Bytes      uint64
	MaxSize    uint32
	Keyframes  uint64
	Codec      Codec // of the last frame
	// KeyframeInterval is the distance in frame_seq between the last two
	// keyframes seen so far (not only in this window); 0 until two were seen.
	KeyframeInterval uint64
	Delta            Stats // counters gained during the window
	Total            Stats // counters since the watch started
	Sequence         uint64
	Period           time.Duration // the writer's period as learned
	Age              time.Duration // since the last frame; -1 if none yet
}

// FPS is the window's frame rate.
func (w Window) FPS() float64 {
	d := w.End.Sub(w.Start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(w.Frames) / d
}

// String is the window as one line.
func (w Window) String() string {
	avg := uint64(0)
	if w.Frames > 0 {
		avg = w.Bytes / w.Frames
	}
	age := "never"
	if w.Age >= 0 {
		age = w.Age.Round(time.Millisecond).String()
	}
	state := "attached"
	if !w.Total.Attached {
		state = "NOT ATTACHED"
	}
	return fmt.Sprintf("%s fps=%.1f avg_bytes=%d max_bytes=%d keyframes=%d keyint=%d codec=%s seq=%d age=%s period=%v crc_fail=%d torn=%d gaps=%d restarts=%d faults=%d oversize=%d (total crc_fail=%d gaps=%d)",
		state, w.FPS(), avg, w.MaxSize, w.Keyframes, w.KeyframeInterval, w.Codec, w.Sequence, age,
		w.Period.Round(10*time.Microsecond), w.Delta.CRCFailures, w.Delta.TornReads, w.Delta.Gaps, w.Delta.Restarts, w.Delta.Faults,
		w.Delta.Oversize, w.Total.CRCFailures, w.Total.Gaps)
}

// Watch reads the ring with a Reader configured by cfg and calls report
// with one Window per interval until ctx ends.
func Watch(ctx context.Context, cfg ReaderConfig, interval time.Duration, report func(Window)) error {
	if interval <= 0 {
		return fmt.Errorf("watching ring %s: interval %v is not positive", cfg.Path, interval)
	}
	r, err := NewReader(cfg)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		cur     Window
		lastKey uint64
		keyInt  uint64
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(f Frame) {
			mu.Lock()
			defer mu.Unlock()
			cur.Frames++
			cur.Bytes += uint64(len(f.Payload))
			cur.MaxSize = max(cur.MaxSize, f.Header.Size)
			cur.Codec = f.Header.Codec
			if f.Restart {
				lastKey = 0
			}
			if f.Header.Keyframe() {
				cur.Keyframes++
				if lastKey != 0 && f.Header.FrameSeq > lastKey {
					keyInt = f.Header.FrameSeq - lastKey
				}
				lastKey = f.Header.FrameSeq
			}
		})
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	start, prev := time.Now(), Stats{}
	for {
		select {
		case <-ctx.Done():
			cancel()
			return <-done
		case now := <-tick.C:
			st := r.Stats()
			mu.Lock()
			w := cur
			cur = Window{}
			w.KeyframeInterval = keyInt
			mu.Unlock()
			w.Start, w.End = start, now
			w.Total, w.Delta = st, st.sub(prev)
			w.Sequence, w.Period, w.Age = r.Sequence(), r.Period(), -1
			if la := r.LastArrival(); !la.IsZero() {
				w.Age = max(now.Sub(la), 0) // a frame may have come after the tick
			}
			start, prev = now, st
			report(w)
		}
	}
}

// sub returns the counters gained since prev.
func (s Stats) sub(prev Stats) Stats {
	return Stats{
		Frames:        s.Frames - prev.Frames,
		Bytes:         s.Bytes - prev.Bytes,
		TornReads:     s.TornReads - prev.TornReads,
		CRCFailures:   s.CRCFailures - prev.CRCFailures,
		Malformed:     s.Malformed - prev.Malformed,
		Gaps:          s.Gaps - prev.Gaps,
		Restarts:      s.Restarts - prev.Restarts,
		Remaps:        s.Remaps - prev.Remaps,
		Faults:        s.Faults - prev.Faults,
		SizeMismatch:  s.SizeMismatch - prev.SizeMismatch,
		KeyframeWaits: s.KeyframeWaits - prev.KeyframeWaits,
		Oversize:      s.Oversize - prev.Oversize,
		Polls:         s.Polls - prev.Polls,
		Attached:      s.Attached,
	}
}
