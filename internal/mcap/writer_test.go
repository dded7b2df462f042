package mcap

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

// The reference readers check files end to end in tests/mcap; these tests
// cover the error paths and the bytes a reader starts from.

var errDisk = errors.New("disk full")

// failingWriter accepts okWrites writes, then fails every write.
type failingWriter struct {
	okWrites int
	writes   int
	short    bool // fail by writing less without an error
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.writes++
	if f.writes <= f.okWrites {
		return len(p), nil
	}
	if f.short {
		return len(p) / 2, nil
	}
	return 0, errDisk
}

// record writes a small file through w and returns the first error.
func record(w io.Writer) error {
	mw, err := NewWriter(w, Options{ChunkSize: 64})
	if err != nil {
		return err
	}
	video, err := mw.AddCompressedVideoChannel("/video", nil)
	if err != nil {
		return err
	}
	tele, err := mw.AddJSONChannel("/telemetry", map[string]string{"source": "nats"})
	if err != nil {
		return err
	}
	for i := range 10 {
		if err := mw.WriteMessage(video, uint32(i), uint64(i), uint64(i), bytes.Repeat([]byte{byte(i)}, 40)); err != nil {
			return err
		}
		if err := mw.WriteMessage(tele, uint32(i), uint64(i), uint64(i), []byte(`{"v":1}`)); err != nil {
			return err
		}
	}
	return mw.Close()
}

func TestFailingWriter(t *testing.T) {
	t.Parallel()
	var counter failingWriter
	counter.okWrites = 1 << 30
	if err := record(&counter); err != nil {
		t.Fatalf("recording to a writer that never fails: %v", err)
	}
	total := counter.writes
	if total < 10 {
		t.Fatalf("only %d writes: the failure points below would cover too little", total)
	}
	for _, short := range []bool{false, true} {
		for ok := range total {
			fw := &failingWriter{okWrites: ok, short: short}
			err := record(fw)
			if err == nil {
				t.Fatalf("short=%v, writer failing after %d of %d writes: no error", short, ok, total)
			}
			want := errDisk
			if short {
				want = io.ErrShortWrite
			}
			if !errors.Is(err, want) {
				t.Fatalf("short=%v, failing after %d writes: error %v does not wrap %v", short, ok, err, want)
			}
			if fw.writes != ok+1 {
				t.Fatalf("short=%v, failing after %d writes: %d writes attempted; the writer must stop at the first failure", short, ok, fw.writes)
			}
			if err.Error() != strings.ToLower(err.Error()[:1])+err.Error()[1:] {
				t.Errorf("error %q does not start lowercase", err)
			}
		}
	}
}

func TestStickyError(t *testing.T) {
	t.Parallel()
	fw := &failingWriter{okWrites: 3}
	mw, err := NewWriter(fw, Options{ChunkSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := mw.AddJSONChannel("/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first message fills the 16-byte chunk and flushes it: the write fails.
	if err := mw.WriteMessage(ch, 0, 1, 1, []byte(`{"a":1}`)); !errors.Is(err, errDisk) {
		t.Fatalf("write that flushes a chunk into a failing writer: %v, want %v", err, errDisk)
	}
	if _, err := mw.AddJSONChannel("/b", nil); !errors.Is(err, errDisk) {
		t.Errorf("AddChannel after a write error: %v, want %v", err, errDisk)
	}
	if err := mw.WriteMessage(ch, 1, 2, 2, nil); !errors.Is(err, errDisk) {
		t.Errorf("WriteMessage after a write error: %v, want %v", err, errDisk)
	}
	if err := mw.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close after a write error: %v, want %v", err, errDisk)
	}
}

func TestAfterClose(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	mw, err := NewWriter(&buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := mw.AddJSONChannel("/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	size := buf.Len()
	if err := mw.WriteMessage(ch, 0, 0, 0, []byte("{}")); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteMessage after Close: %v, want ErrClosed", err)
	}
	if _, err := mw.AddSchema("s", "jsonschema", []byte("{}")); !errors.Is(err, ErrClosed) {
		t.Errorf("AddSchema after Close: %v, want ErrClosed", err)
	}
	if _, err := mw.AddJSONChannel("/b", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("AddChannel after Close: %v, want ErrClosed", err)
	}
	if err := mw.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if buf.Len() != size {
		t.Errorf("calls after Close wrote %d bytes", buf.Len()-size)
	}
}

func TestUnknownIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	mw, err := NewWriter(&buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mw.AddChannel(1, "/a", "json", nil); err == nil || !strings.Contains(err.Error(), "unknown schema id 1") {
		t.Errorf("channel with a schema id never added: %v", err)
	}
	ch, err := mw.AddJSONChannel("/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint16{0, ch + 1, 65535} {
		if err := mw.WriteMessage(id, 0, 0, 0, []byte("{}")); err == nil || !strings.Contains(err.Error(), "unknown channel id") {
			t.Errorf("message on channel %d that was never added: %v", id, err)
		}
	}
	// The refused calls left nothing behind: the file holds no message.
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	if mw.messages != 0 || len(mw.chunks) != 0 {
		t.Errorf("refused messages were counted: %d messages, %d chunks", mw.messages, len(mw.chunks))
	}
	if _, err := NewWriter(&buf, Options{ChunkSize: -1}); err == nil {
		t.Error("negative chunk size accepted")
	}
}

// TestFileCRCs walks the records of a file and checks the magic, the Data
// End CRC and the footer's summary CRC against CRCs computed here.
func TestFileCRCs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := record(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if !bytes.HasPrefix(b, Magic) || !bytes.HasSuffix(b, Magic) {
		t.Fatal("file does not start and end with the magic")
	}
	footer := b[len(b)-len(Magic)-29:]
	if footer[0] != opFooter || binary.LittleEndian.Uint64(footer[1:]) != 20 {
		t.Fatalf("no footer before the closing magic: % x", footer[:9])
	}
	summaryStart := binary.LittleEndian.Uint64(footer[9:])
	summaryCRC := binary.LittleEndian.Uint32(footer[25:])
	if got := crc32.ChecksumIEEE(b[summaryStart : len(b)-len(Magic)-4]); got != summaryCRC {
		t.Errorf("summary crc %08x, computed %08x", summaryCRC, got)
	}
	dataEnd := b[summaryStart-13 : summaryStart]
	if dataEnd[0] != opDataEnd {
		t.Fatalf("no data end record before the summary: % x", dataEnd)
	}
	if got, want := binary.LittleEndian.Uint32(dataEnd[9:]), crc32.ChecksumIEEE(b[:summaryStart-13]); got != want {
		t.Errorf("data section crc %08x, computed %08x", got, want)
	}
}

func TestMarshalCompressedVideo(t *testing.T) {
	t.Parallel()
	frame := []byte{0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88, 0xff}
	b, err := MarshalCompressedVideo(1_700_000_000_123_456_789, "camera", "h264", frame)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Timestamp struct {
			Sec  uint64 `json:"sec"`
			Nsec uint32 `json:"nsec"`
		} `json:"timestamp"`
		FrameID string `json:"frame_id"`
		Data    string `json:"data"`
		Format  string `json:"format"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	data, err := base64.StdEncoding.DecodeString(got.Data)
	if err != nil {
		t.Fatalf("data %q is not standard base64: %v", got.Data, err)
	}
	if got.Timestamp.Sec != 1_700_000_000 || got.Timestamp.Nsec != 123_456_789 || got.FrameID != "camera" ||
		got.Format != "h264" || !bytes.Equal(data, frame) {
		t.Errorf("decoded %+v, data % x", got, data)
	}
	var schema map[string]any
	if err := json.Unmarshal(CompressedVideoSchema(), &schema); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	props, _ := schema["properties"].(map[string]any)
	for _, field := range []string{"timestamp", "frame_id", "data", "format"} {
		if _, ok := props[field]; !ok {
			t.Errorf("schema lacks property %q", field)
		}
	}
	if enc := props["data"].(map[string]any)["contentEncoding"]; enc != "base64" {
		t.Errorf("data's contentEncoding %v, want base64", enc)
	}
}

// TestLargeMessageBufferReleased: a message far over the chunk size gets a
// chunk of its own, and the writer does not keep its buffer afterwards.
func TestLargeMessageBufferReleased(t *testing.T) {
	t.Parallel()
	mw, err := NewWriter(io.Discard, Options{ChunkSize: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := mw.AddJSONChannel("/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mw.WriteMessage(ch, 0, 0, 0, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := mw.WriteMessage(ch, 1, 1, 1, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if len(mw.chunks) != 2 || mw.chunks[1].start != 1 || len(mw.chunks[1].indexOffsets) != 1 {
		t.Fatalf("chunks %+v: the large message should close the open chunk and fill one of its own", mw.chunks)
	}
	if c := cap(mw.chunk); c > 2<<10 {
		t.Errorf("chunk buffer keeps %d bytes after a large message, for a 1 KiB target", c)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
}
