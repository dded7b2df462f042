package shmring

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"
)

// Writer commits frames into a ring file in the simulator's order: header
// and payload, then write_len, then sequence (stored last, atomically). It is
// safe for concurrent use; frames are committed one at a time.
type Writer struct {
	path string
	crc  bool

	mu       sync.Mutex
	m        *mapping
	sequence uint64
	frameSeq uint64
}

// WriterOption changes how CreateWriter creates a Writer.
type WriterOption func(*writerOptions)

type writerOptions struct {
	crc  bool
	mode os.FileMode
}

// WithCRC turns the payload CRC-32 on (the default) or off. A writer with CRC
// off stores 0 in the header, and its readers must run with DisableCRC.
func WithCRC(on bool) WriterOption { return func(o *writerOptions) { o.crc = on } }

// WithFileMode sets the permissions of a file the writer creates (default
// 0644; readers need only read access).
func WithFileMode(mode os.FileMode) WriterOption { return func(o *writerOptions) { o.mode = mode } }

// CreateWriter creates the directories and the ring file at path, sizes it to
// size bytes (control region included), maps it and zeroes the control
// region, so that sequence and frame_seq start again from 1.
//
// A file that already has this size is reused in place (readers keep their
// mapping and see a writer restart). A file of another size is replaced by a
// new file renamed into place, never resized under the readers' mappings.
func CreateWriter(path string, size int64, opts ...WriterOption) (*Writer, error) {
	o := writerOptions{crc: true, mode: 0o644}
	for _, opt := range opts {
		opt(&o)
	}
	if path == "" {
		return nil, errors.New("creating ring writer: path is empty")
	}
	if size < OffPayload || size > maxMapSize {
		return nil, fmt.Errorf("creating ring writer for %s: size %d outside %d..%d", path, size, OffPayload, int64(maxMapSize))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating ring directory for %s: %w", path, err)
	}
	if err := prepareFile(path, size, o.mode); err != nil {
		return nil, err
	}
	m, err := mapFile(path, true)
	if err != nil {
		return nil, err
	}
	if m.id.size != size {
		m.unmap()
		return nil, fmt.Errorf("creating ring writer for %s: file changed size to %d during creation", path, m.id.size)
	}
	// Zero the control region: sequence first, so that no reader takes the
	// old write_len for a new frame.
	storeU64(m.mem, OffSequence, 0)
	storeU64(m.mem, OffWriteLen, 0)
	clear(m.mem[OffSlot:OffPayload])
	return &Writer{path: path, crc: o.crc, m: m}, nil
}

// prepareFile leaves a regular file of exactly size bytes at path.
func prepareFile(path string, size int64, mode os.FileMode) error {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == size {
		return nil
	} else if err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("creating ring writer: %s exists and is not a regular file", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return fmt.Errorf("creating ring file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Truncate(size); err != nil {
		tmp.Close()
		return fmt.Errorf("sizing ring file %s to %d bytes: %w", tmp.Name(), size, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("setting mode of ring file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing ring file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("installing ring file %s: %w", path, err)
	}
	return nil
}

// Path is the ring file's path.
func (w *Writer) Path() string { return w.path }

// MaxPayload is the largest payload the ring holds.
func (w *Writer) MaxPayload() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return 0
	}
	return len(w.m.mem) - OffPayload
}

// Sequence is the sequence of the last committed frame (0 before the first).
func (w *Writer) Sequence() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sequence
}

// WriteFrame commits one frame. It sets h.Size to len(payload), h.CRC32 to
// the payload's CRC-32 (0 with CRC off), h.FrameSeq to the previous frame's
// plus one when it is 0, and h.FrameID to the current time in Unix ns when it
// is 0. It returns the header as stored.
func (w *Writer) WriteFrame(h Header, payload []byte) (Header, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return h, fmt.Errorf("writing frame to ring %s: writer closed", w.path)
	}
	mem := w.m.mem
	if len(payload) > len(mem)-OffPayload {
		return h, fmt.Errorf("writing frame to ring %s: payload of %d bytes exceeds the ring's %d", w.path, len(payload), len(mem)-OffPayload)
	}
	h.Size = uint32(len(payload))
	h.CRC32 = 0
	if w.crc {
		h.CRC32 = Checksum(payload)
	}
	if h.FrameSeq == 0 {
		h.FrameSeq = w.frameSeq + 1
	}
	if h.FrameID == 0 {
		h.FrameID = uint64(time.Now().UnixNano())
	}
	if err := commitGuarded(mem, h, payload, w.sequence+1); err != nil {
		return h, fmt.Errorf("writing frame to ring %s: %w", w.path, err)
	}
	w.sequence++
	w.frameSeq = h.FrameSeq
	return h, nil
}

// errFault is returned when the file was truncated under the writer's mapping.
var errFault = errors.New("memory fault: ring file truncated under the mapping")

// commitGuarded stores the frame in the commit order, containing the fault
// of a file truncated under the mapping.
func commitGuarded(mem []byte, h Header, payload []byte, seq uint64) (err error) {
	defer func() {
		if e := recover(); e != nil {
			if _, ok := e.(interface{ Addr() uintptr }); ok {
				err = errFault
				return
			}
			panic(e)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	c := commit{mem, h, payload, seq}
	for i := range commitStores {
		c.store(i)
	}
	return nil
}

// commit is one frame on its way into the ring.
type commit struct {
	mem     []byte
	h       Header
	payload []byte
	seq     uint64
}

// commitStores is how many stores a commit makes.
const commitStores = 4

// store makes the i-th store of the commit, in the writer order of
// docs/ring.md, the payload before the header: a reader that copies the
// slot meanwhile then holds the old header over part of the new payload, or
// a header whose crc32 (stored after every other field but reserved) is
// still the old one over the new payload, and drops it for its CRC. Stored
// the other way, the next frame's frame_id, frame_seq or flags over the old
// payload would verify (TestCommitCaughtMidwayNeverVerifies).
func (c *commit) store(i int) {
	switch i {
	case 0:
		copy(c.mem[OffPayload:], c.payload)
	case 1:
		c.h.Put(c.mem[OffSlot:OffPayload])
	case 2:
		storeU64(c.mem, OffWriteLen, uint64(HeaderSize+len(c.payload)))
	case 3:
		storeU64(c.mem, OffSequence, c.seq)
	}
}

// Close unmaps the file. The file stays, with its last frame, for readers.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return nil
	}
	err := w.m.unmap()
	w.m = nil
	if err != nil {
		return fmt.Errorf("closing ring writer %s: %w", w.path, err)
	}
	return nil
}
