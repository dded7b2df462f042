package mcap

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
)

// Magic starts and ends every MCAP file: 0x89, "MCAP", the major version
// "0", CR, LF.
var Magic = []byte{0x89, 'M', 'C', 'A', 'P', '0', '\r', '\n'}

// Record opcodes, from the specification.
const (
	opHeader        = 0x01
	opFooter        = 0x02
	opSchema        = 0x03
	opChannel       = 0x04
	opMessage       = 0x05
	opChunk         = 0x06
	opMessageIndex  = 0x07
	opChunkIndex    = 0x08
	opStatistics    = 0x0B
	opSummaryOffset = 0x0E
	opDataEnd       = 0x0F
)

// Library is what the Header record names as the writing library.
const Library = "sdr-caddy"

// DefaultChunkSize is the chunk size target when Options.ChunkSize is zero.
const DefaultChunkSize = 1 << 20

// ErrClosed is returned by every call on a Writer after Close.
var ErrClosed = errors.New("mcap writer is closed")

// Options configures a Writer.
type Options struct {
	// Profile is the Header record's profile: empty, or a well-known
	// profile, or a custom one prefixed "x-".
	Profile string

	// ChunkSize is the size, in bytes of uncompressed records, at which a
	// chunk is closed and written. Zero means DefaultChunkSize. A message
	// larger than it gets a chunk of its own.
	ChunkSize int
}

// Writer writes one MCAP file. It is not safe for concurrent use.
//
// The first error from the underlying writer is sticky: every later call
// returns it, since the file is broken from that byte on.
type Writer struct {
	w         io.Writer
	chunkSize int

	offset     uint64 // bytes written to w so far
	crc        uint32 // running CRC32 of the section being written
	err        error  // first write error, sticky
	closed     bool
	scratch    []byte // record being built outside the chunk
	chunk      []byte // records of the open chunk
	chunkStart uint64 // log time range of the open chunk
	chunkEnd   uint64
	chunkIndex map[uint16][]indexEntry // message index of the open chunk

	schemas   []schema
	channels  []channel
	known     map[uint16]bool // channel ids added
	chunks    []chunkIndex
	messages  uint64
	perChan   map[uint16]uint64
	timeStart uint64
	timeEnd   uint64

	videoSchema uint16 // id of foxglove.CompressedVideo, once added
}

type schema struct {
	id             uint16
	name, encoding string
	data           []byte
}

type channel struct {
	id, schemaID    uint16
	topic, encoding string
	metadata        map[string]string
}

type indexEntry struct {
	logTime, offset uint64
}

type chunkIndex struct {
	start, end   uint64
	offset       uint64 // of the chunk record
	length       uint64 // of the chunk record, opcode and length included
	indexOffsets []channelOffset
	indexLength  uint64
	size         uint64 // of the records field
}

type channelOffset struct {
	channel uint16
	offset  uint64
}

// NewWriter writes the leading magic and the Header record to w and returns
// a Writer that writes the rest of the file there. The caller keeps w: Close
// finishes the file but does not close w.
func NewWriter(w io.Writer, opts Options) (*Writer, error) {
	if opts.ChunkSize < 0 {
		return nil, fmt.Errorf("mcap chunk size %d is negative", opts.ChunkSize)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	mw := &Writer{
		w:          w,
		chunkSize:  opts.ChunkSize,
		chunkIndex: map[uint16][]indexEntry{},
		known:      map[uint16]bool{},
		perChan:    map[uint16]uint64{},
	}
	mw.emit(Magic)
	b := beginRecord(mw.scratch[:0], opHeader)
	b = putString(b, opts.Profile)
	b = putString(b, Library)
	mw.emitRecord(b)
	if mw.err != nil {
		return nil, mw.err
	}
	return mw, nil
}

// usable reports why the writer cannot take another call, or nil.
func (w *Writer) usable() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

// AddSchema writes a Schema record and returns its id (from 1). encoding is
// the schema encoding ("jsonschema", "protobuf", ...); data the schema in
// that encoding.
func (w *Writer) AddSchema(name, encoding string, data []byte) (uint16, error) {
	if err := w.usable(); err != nil {
		return 0, fmt.Errorf("adding schema %q: %w", name, err)
	}
	if len(w.schemas) == math.MaxUint16 {
		return 0, fmt.Errorf("adding schema %q: all %d schema ids are taken", name, math.MaxUint16)
	}
	if uint64(len(data)) > math.MaxUint32 {
		return 0, fmt.Errorf("adding schema %q: %d bytes of schema data is more than a record holds", name, len(data))
	}
	s := schema{id: uint16(len(w.schemas) + 1), name: name, encoding: encoding, data: slices.Clone(data)}
	w.emitRecord(appendSchema(w.scratch[:0], s))
	if w.err != nil {
		return 0, fmt.Errorf("adding schema %q: %w", name, w.err)
	}
	w.schemas = append(w.schemas, s)
	return s.id, nil
}

// AddChannel writes a Channel record and returns its id (from 1). schemaID
// is an id from AddSchema, or 0 for a channel without a schema;
// messageEncoding names how its messages are encoded ("json", "cdr", ...).
func (w *Writer) AddChannel(schemaID uint16, topic, messageEncoding string, metadata map[string]string) (uint16, error) {
	if err := w.usable(); err != nil {
		return 0, fmt.Errorf("adding channel %q: %w", topic, err)
	}
	if schemaID != 0 && int(schemaID) > len(w.schemas) {
		return 0, fmt.Errorf("adding channel %q: unknown schema id %d", topic, schemaID)
	}
	if len(w.channels) == math.MaxUint16 {
		return 0, fmt.Errorf("adding channel %q: all %d channel ids are taken", topic, math.MaxUint16)
	}
	c := channel{id: uint16(len(w.channels) + 1), schemaID: schemaID, topic: topic, encoding: messageEncoding}
	if len(metadata) > 0 {
		c.metadata = make(map[string]string, len(metadata))
		for k, v := range metadata {
			c.metadata[k] = v
		}
	}
	w.emitRecord(appendChannel(w.scratch[:0], c))
	if w.err != nil {
		return 0, fmt.Errorf("adding channel %q: %w", topic, w.err)
	}
	w.channels = append(w.channels, c)
	w.known[c.id] = true
	return c.id, nil
}

// WriteMessage adds a message to the open chunk, writing the chunk first if
// the message would take it past the chunk size. Log times may come in any
// order. data is copied.
func (w *Writer) WriteMessage(channelID uint16, sequence uint32, logTime, publishTime uint64, data []byte) error {
	if err := w.usable(); err != nil {
		return fmt.Errorf("writing message on channel %d: %w", channelID, err)
	}
	if !w.known[channelID] {
		return fmt.Errorf("writing message: unknown channel id %d", channelID)
	}
	size := 9 + 2 + 4 + 8 + 8 + len(data)
	if len(w.chunk) > 0 && len(w.chunk)+size > w.chunkSize {
		w.flushChunk()
		if w.err != nil {
			return fmt.Errorf("writing message on channel %d: %w", channelID, w.err)
		}
	}
	if len(w.chunk) == 0 {
		w.chunkStart, w.chunkEnd = logTime, logTime
	}
	w.chunkStart = min(w.chunkStart, logTime)
	w.chunkEnd = max(w.chunkEnd, logTime)
	if w.messages == 0 {
		w.timeStart, w.timeEnd = logTime, logTime
	}
	w.timeStart = min(w.timeStart, logTime)
	w.timeEnd = max(w.timeEnd, logTime)
	w.chunkIndex[channelID] = append(w.chunkIndex[channelID], indexEntry{logTime: logTime, offset: uint64(len(w.chunk))})
	b := beginRecord(w.chunk, opMessage)
	b = binary.LittleEndian.AppendUint16(b, channelID)
	b = binary.LittleEndian.AppendUint32(b, sequence)
	b = binary.LittleEndian.AppendUint64(b, logTime)
	b = binary.LittleEndian.AppendUint64(b, publishTime)
	b = append(b, data...)
	w.chunk = endRecord(b, len(w.chunk))
	w.messages++
	w.perChan[channelID]++
	if len(w.chunk) >= w.chunkSize {
		w.flushChunk()
		if w.err != nil {
			return fmt.Errorf("writing message on channel %d: %w", channelID, w.err)
		}
	}
	return nil
}

// Close writes the open chunk, the Data End record, the summary, the
// summary offsets, the footer and the closing magic. It does not close the
// underlying writer. A second Close returns ErrClosed.
func (w *Writer) Close() error {
	if err := w.usable(); err != nil {
		return fmt.Errorf("closing mcap file: %w", err)
	}
	w.closed = true
	w.flushChunk()

	// Data End: the CRC covers every byte before this record.
	dataCRC := w.crc
	b := beginRecord(w.scratch[:0], opDataEnd)
	b = binary.LittleEndian.AppendUint32(b, dataCRC)
	w.emitRecord(b)

	w.crc = 0
	summaryStart := w.offset
	var groups []summaryGroup
	group := func(op byte, build func(b []byte) []byte) {
		start := w.offset
		w.emit(build(w.scratch[:0]))
		if w.offset > start {
			groups = append(groups, summaryGroup{op: op, start: start, length: w.offset - start})
		}
	}
	group(opSchema, func(b []byte) []byte {
		for _, s := range w.schemas {
			b = appendSchema(b, s)
		}
		return b
	})
	group(opChannel, func(b []byte) []byte {
		for _, c := range w.channels {
			b = appendChannel(b, c)
		}
		return b
	})
	group(opStatistics, w.appendStatistics)
	group(opChunkIndex, func(b []byte) []byte {
		for _, ci := range w.chunks {
			b = appendChunkIndex(b, ci)
		}
		return b
	})

	summaryOffsetStart := w.offset
	b = w.scratch[:0]
	for _, g := range groups {
		b = beginRecord(b, opSummaryOffset)
		start := len(b) - 9
		b = append(b, g.op)
		b = binary.LittleEndian.AppendUint64(b, g.start)
		b = binary.LittleEndian.AppendUint64(b, g.length)
		b = endRecord(b, start)
	}
	w.emit(b)

	// Footer: its CRC covers the summary, the summary offsets and the
	// footer up to the CRC field.
	b = append(w.scratch[:0], opFooter)
	b = binary.LittleEndian.AppendUint64(b, 8+8+4)
	b = binary.LittleEndian.AppendUint64(b, summaryStart)
	b = binary.LittleEndian.AppendUint64(b, summaryOffsetStart)
	w.emit(b)
	b = binary.LittleEndian.AppendUint32(b[:0], w.crc)
	w.emit(b)
	w.emit(Magic)
	if w.err != nil {
		return fmt.Errorf("closing mcap file: %w", w.err)
	}
	return nil
}

type summaryGroup struct {
	op            byte
	start, length uint64
}

// flushChunk writes the open chunk, if it holds anything, and its message
// index records, and remembers its chunk index.
func (w *Writer) flushChunk() {
	if len(w.chunk) == 0 || w.err != nil {
		return
	}
	ci := chunkIndex{start: w.chunkStart, end: w.chunkEnd, offset: w.offset, size: uint64(len(w.chunk))}
	b := beginRecord(w.scratch[:0], opChunk)
	b = binary.LittleEndian.AppendUint64(b, w.chunkStart)
	b = binary.LittleEndian.AppendUint64(b, w.chunkEnd)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(w.chunk)))
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(w.chunk))
	b = putString(b, "")
	b = binary.LittleEndian.AppendUint64(b, uint64(len(w.chunk)))
	// The records follow the header directly; set the record's length to
	// cover them without copying them into b.
	binary.LittleEndian.PutUint64(b[1:9], uint64(len(b)-9+len(w.chunk)))
	w.emit(b)
	w.emit(w.chunk)
	ci.length = w.offset - ci.offset

	ids := make([]uint16, 0, len(w.chunkIndex))
	for id := range w.chunkIndex {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	indexStart := w.offset
	b = w.scratch[:0]
	for _, id := range ids {
		entries := w.chunkIndex[id]
		slices.SortStableFunc(entries, func(a, b indexEntry) int { return cmp.Compare(a.logTime, b.logTime) })
		ci.indexOffsets = append(ci.indexOffsets, channelOffset{channel: id, offset: indexStart + uint64(len(b))})
		start := len(b)
		b = beginRecord(b, opMessageIndex)
		b = binary.LittleEndian.AppendUint16(b, id)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)*16))
		for _, e := range entries {
			b = binary.LittleEndian.AppendUint64(b, e.logTime)
			b = binary.LittleEndian.AppendUint64(b, e.offset)
		}
		b = endRecord(b, start)
	}
	w.emit(b)
	ci.indexLength = w.offset - indexStart
	w.scratch = b[:0]
	if w.err != nil {
		return
	}
	w.chunks = append(w.chunks, ci)
	w.chunk = w.chunk[:0]
	if cap(w.chunk) > 2*w.chunkSize {
		w.chunk = nil // a message far over the target grew it: do not keep that
	}
	clear(w.chunkIndex)
}

func (w *Writer) appendStatistics(b []byte) []byte {
	start := len(b)
	b = beginRecord(b, opStatistics)
	b = binary.LittleEndian.AppendUint64(b, w.messages)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(w.schemas)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(w.channels)))
	b = binary.LittleEndian.AppendUint32(b, 0) // attachments
	b = binary.LittleEndian.AppendUint32(b, 0) // metadata
	b = binary.LittleEndian.AppendUint32(b, uint32(len(w.chunks)))
	b = binary.LittleEndian.AppendUint64(b, w.timeStart)
	b = binary.LittleEndian.AppendUint64(b, w.timeEnd)
	ids := make([]uint16, 0, len(w.perChan))
	for id := range w.perChan {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)*10))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint16(b, id)
		b = binary.LittleEndian.AppendUint64(b, w.perChan[id])
	}
	return endRecord(b, start)
}

func appendChunkIndex(b []byte, ci chunkIndex) []byte {
	start := len(b)
	b = beginRecord(b, opChunkIndex)
	b = binary.LittleEndian.AppendUint64(b, ci.start)
	b = binary.LittleEndian.AppendUint64(b, ci.end)
	b = binary.LittleEndian.AppendUint64(b, ci.offset)
	b = binary.LittleEndian.AppendUint64(b, ci.length)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ci.indexOffsets)*10))
	for _, o := range ci.indexOffsets {
		b = binary.LittleEndian.AppendUint16(b, o.channel)
		b = binary.LittleEndian.AppendUint64(b, o.offset)
	}
	b = binary.LittleEndian.AppendUint64(b, ci.indexLength)
	b = putString(b, "")
	b = binary.LittleEndian.AppendUint64(b, ci.size) // compressed size: uncompressed
	b = binary.LittleEndian.AppendUint64(b, ci.size)
	return endRecord(b, start)
}

func appendSchema(b []byte, s schema) []byte {
	start := len(b)
	b = beginRecord(b, opSchema)
	b = binary.LittleEndian.AppendUint16(b, s.id)
	b = putString(b, s.name)
	b = putString(b, s.encoding)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.data)))
	b = append(b, s.data...)
	return endRecord(b, start)
}

func appendChannel(b []byte, c channel) []byte {
	start := len(b)
	b = beginRecord(b, opChannel)
	b = binary.LittleEndian.AppendUint16(b, c.id)
	b = binary.LittleEndian.AppendUint16(b, c.schemaID)
	b = putString(b, c.topic)
	b = putString(b, c.encoding)
	keys := make([]string, 0, len(c.metadata))
	for k := range c.metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	lenAt := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, k := range keys {
		b = putString(b, k)
		b = putString(b, c.metadata[k])
	}
	binary.LittleEndian.PutUint32(b[lenAt:], uint32(len(b)-lenAt-4))
	return endRecord(b, start)
}

// beginRecord appends an opcode and a length placeholder; endRecord, given
// the index of the opcode, fills the length in.
func beginRecord(b []byte, op byte) []byte {
	b = append(b, op)
	return binary.LittleEndian.AppendUint64(b, 0)
}

func endRecord(b []byte, start int) []byte {
	binary.LittleEndian.PutUint64(b[start+1:start+9], uint64(len(b)-start-9))
	return b
}

func putString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// emitRecord writes one record built in scratch and keeps scratch's storage.
func (w *Writer) emitRecord(b []byte) {
	b = endRecord(b, 0)
	w.emit(b)
	w.scratch = b[:0]
}

// emit writes p to the file, counting its offset and CRC. After the first
// error it writes nothing.
func (w *Writer) emit(p []byte) {
	if w.err != nil || len(p) == 0 {
		return
	}
	n, err := w.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("writing mcap at offset %d: %w", w.offset, err)
		return
	}
	w.offset += uint64(n)
	w.crc = crc32.Update(w.crc, crc32.IEEETable, p)
}
