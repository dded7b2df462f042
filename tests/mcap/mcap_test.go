// Package mcap_test proves internal/mcap against the reference MCAP readers:
// each test writes a file with the writer, reads it with McapStreamReader and
// McapIndexedReader from @mcap/core (Node.js, tests/node/mcap/check.mjs),
// and compares what the readers found with what was written.
package mcap_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/mcap"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// written is one message as the test wrote it, in check.mjs's form:
// [channel, sequence, logTime, publishTime, sha256(data)].
type written struct {
	channel     uint16
	sequence    uint32
	logTime     uint64
	publishTime uint64
	digest      string
}

func (m written) key() string {
	return fmt.Sprintf("%d/%d/%d/%d/%s", m.channel, m.sequence, m.logTime, m.publishTime, m.digest)
}

// readMessage is a message as check.mjs prints it.
type readMessage [5]json.RawMessage

func (m readMessage) key() string {
	var ch, seq int
	var logTime, pub, digest string
	_ = json.Unmarshal(m[0], &ch)
	_ = json.Unmarshal(m[1], &seq)
	_ = json.Unmarshal(m[2], &logTime)
	_ = json.Unmarshal(m[3], &pub)
	_ = json.Unmarshal(m[4], &digest)
	return fmt.Sprintf("%d/%d/%s/%s/%s", ch, seq, logTime, pub, digest)
}

type channelRecord struct {
	ID              uint16            `json:"id"`
	SchemaID        uint16            `json:"schemaId"`
	Topic           string            `json:"topic"`
	MessageEncoding string            `json:"messageEncoding"`
	Metadata        map[string]string `json:"metadata"`
}

type schemaRecord struct {
	ID       uint16 `json:"id"`
	Name     string `json:"name"`
	Encoding string `json:"encoding"`
	Data     struct {
		SHA256 string `json:"sha256"`
	} `json:"data"`
}

type chunkIndex struct {
	MessageStartTime    string            `json:"messageStartTime"`
	MessageEndTime      string            `json:"messageEndTime"`
	ChunkStartOffset    string            `json:"chunkStartOffset"`
	ChunkLength         string            `json:"chunkLength"`
	MessageIndexOffsets map[string]string `json:"messageIndexOffsets"`
	Compression         string            `json:"compression"`
	UncompressedSize    string            `json:"uncompressedSize"`
}

// report is check.mjs's output line.
type report struct {
	Size   int `json:"size"`
	Stream struct {
		Error        *string        `json:"error"`
		Records      map[string]int `json:"records"`
		ChunkCRCsSet int            `json:"chunkCrcsSet"`
		Chunks       []struct {
			Start, End, Min, Max string
			Messages             int
		} `json:"chunks"`
		MessagesOutsideChunks int           `json:"messagesOutsideChunks"`
		Messages              []readMessage `json:"messages"`
	} `json:"stream"`
	Indexed struct {
		Error  *string `json:"error"`
		Header struct {
			Profile string `json:"profile"`
			Library string `json:"library"`
		} `json:"header"`
		Footer struct {
			SummaryStart       string `json:"summaryStart"`
			SummaryOffsetStart string `json:"summaryOffsetStart"`
			SummaryCRC         uint32 `json:"summaryCrc"`
		} `json:"footer"`
		Statistics *struct {
			MessageCount         string            `json:"messageCount"`
			SchemaCount          int               `json:"schemaCount"`
			ChannelCount         int               `json:"channelCount"`
			AttachmentCount      int               `json:"attachmentCount"`
			MetadataCount        int               `json:"metadataCount"`
			ChunkCount           int               `json:"chunkCount"`
			MessageStartTime     string            `json:"messageStartTime"`
			MessageEndTime       string            `json:"messageEndTime"`
			ChannelMessageCounts map[string]string `json:"channelMessageCounts"`
		} `json:"statistics"`
		Schemas                []schemaRecord  `json:"schemas"`
		Channels               []channelRecord `json:"channels"`
		ChunkIndexes           []chunkIndex    `json:"chunkIndexes"`
		SummaryOffsets         []int           `json:"summaryOffsets"`
		DataSectionCRC         uint32          `json:"dataSectionCrc"`
		DataSectionCRCComputed uint32          `json:"dataSectionCrcComputed"`
		LayoutErrors           []string        `json:"layoutErrors"`
		PerChannel             map[string]int  `json:"perChannel"`
		Messages               []readMessage   `json:"messages"`
		Ordered                bool            `json:"ordered"`
	} `json:"indexed"`
}

// check runs check.mjs on path.
func check(t *testing.T, path string) report {
	t.Helper()
	out := testenv.MCAPCheck(t, path)
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("check.mjs printed %.500q: %v", out, err)
	}
	return r
}

// recording writes an MCAP file and remembers what went into it.
type recording struct {
	t        *testing.T
	path     string
	file     *os.File
	w        *mcap.Writer
	profile  string
	schemas  []schemaRecord
	channels []channelRecord
	messages []written
	seq      map[uint16]uint32
}

func newRecording(t *testing.T, opts mcap.Options) *recording {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec.mcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	w, err := mcap.NewWriter(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &recording{t: t, path: path, file: f, w: w, profile: opts.Profile, seq: map[uint16]uint32{}}
}

func (r *recording) schema(name, encoding string, data []byte) uint16 {
	r.t.Helper()
	id, err := r.w.AddSchema(name, encoding, data)
	if err != nil {
		r.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	s := schemaRecord{ID: id, Name: name, Encoding: encoding}
	s.Data.SHA256 = hex.EncodeToString(sum[:])
	r.schemas = append(r.schemas, s)
	return id
}

func (r *recording) channel(schemaID uint16, topic, encoding string, metadata map[string]string) uint16 {
	r.t.Helper()
	id, err := r.w.AddChannel(schemaID, topic, encoding, metadata)
	if err != nil {
		r.t.Fatal(err)
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	r.channels = append(r.channels, channelRecord{ID: id, SchemaID: schemaID, Topic: topic, MessageEncoding: encoding, Metadata: metadata})
	return id
}

func (r *recording) message(channel uint16, logTime uint64, data []byte) {
	r.t.Helper()
	seq := r.seq[channel]
	r.seq[channel]++
	publishTime := logTime - min(logTime, 1000) // distinct from the log time
	if err := r.w.WriteMessage(channel, seq, logTime, publishTime, data); err != nil {
		r.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	r.messages = append(r.messages, written{channel, seq, logTime, publishTime, hex.EncodeToString(sum[:])})
}

// close finishes the file and checks it with both readers against what was
// written; it returns the report for further checks.
func (r *recording) close() report {
	t := r.t
	t.Helper()
	if err := r.w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.file.Close(); err != nil {
		t.Fatal(err)
	}
	rep := check(t, r.path)
	s, ix := rep.Stream, rep.Indexed
	if s.Error != nil {
		t.Fatalf("stream reader: %s", *s.Error)
	}
	if ix.Error != nil {
		t.Fatalf("indexed reader: %s", *ix.Error)
	}

	// Both readers read every message, with its channel, sequence, times
	// and bytes: the stream reader in the order written, the indexed reader
	// in log time order.
	want := make([]string, len(r.messages))
	for i, m := range r.messages {
		want[i] = m.key()
	}
	keys := func(ms []readMessage) []string {
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.key()
		}
		return out
	}
	if got := keys(s.Messages); !slices.Equal(got, want) {
		t.Errorf("stream reader: %d messages, %d written; first difference: %s", len(got), len(want), firstDiff(got, want))
	}
	gotIx, wantSorted := keys(ix.Messages), slices.Clone(want)
	slices.Sort(gotIx)
	slices.Sort(wantSorted)
	if !slices.Equal(gotIx, wantSorted) {
		t.Errorf("indexed reader: %d messages, %d written; first difference: %s", len(gotIx), len(wantSorted), firstDiff(gotIx, wantSorted))
	}
	if !ix.Ordered {
		t.Error("indexed reader yielded messages out of log time order")
	}
	if s.MessagesOutsideChunks != 0 {
		t.Errorf("%d messages outside chunks", s.MessagesOutsideChunks)
	}

	// Records, CRCs, layout.
	chunks := len(ix.ChunkIndexes)
	indexes := 0
	for _, ci := range ix.ChunkIndexes {
		indexes += len(ci.MessageIndexOffsets)
		if ci.Compression != "" {
			t.Errorf("chunk compression %q", ci.Compression)
		}
	}
	groups := 1 // Statistics
	for _, n := range []int{len(r.schemas), len(r.channels), chunks} {
		if n > 0 {
			groups++
		}
	}
	wantRecords := map[string]int{
		"Header": 1, "Footer": 1, "DataEnd": 1, "Statistics": 1,
		"Schema": 2 * len(r.schemas), "Channel": 2 * len(r.channels),
		"Message": len(r.messages), "Chunk": chunks, "MessageIndex": indexes, "ChunkIndex": chunks,
		"SummaryOffset": groups,
	}
	for k, v := range wantRecords {
		if s.Records[k] != v {
			t.Errorf("stream reader: %d %s records, want %d (all: %v)", s.Records[k], k, v, s.Records)
		}
	}
	for k := range s.Records {
		if _, ok := wantRecords[k]; !ok {
			t.Errorf("stream reader: unexpected %s records (all: %v)", k, s.Records)
		}
	}
	if s.ChunkCRCsSet != chunks {
		t.Errorf("%d of %d chunks carry a CRC", s.ChunkCRCsSet, chunks)
	}
	if len(s.Chunks) != chunks {
		t.Fatalf("stream reader saw %d chunks, the summary indexes %d", len(s.Chunks), chunks)
	}
	for i, c := range s.Chunks {
		if c.Messages == 0 || c.Start != c.Min || c.End != c.Max {
			t.Errorf("chunk %d: start %s end %s, its %d messages span %s..%s", i, c.Start, c.End, c.Messages, c.Min, c.Max)
		}
		if ci := ix.ChunkIndexes[i]; ci.MessageStartTime != c.Start || ci.MessageEndTime != c.End {
			t.Errorf("chunk index %d: %s..%s, the chunk says %s..%s", i, ci.MessageStartTime, ci.MessageEndTime, c.Start, c.End)
		}
	}
	if ix.Footer.SummaryStart == "0" || ix.Footer.SummaryOffsetStart == "0" || ix.Footer.SummaryCRC == 0 {
		t.Errorf("footer without a summary, summary offsets or summary CRC: %+v", ix.Footer)
	}
	if ix.DataSectionCRC == 0 || ix.DataSectionCRC != ix.DataSectionCRCComputed {
		t.Errorf("data section crc %08x, computed %08x", ix.DataSectionCRC, ix.DataSectionCRCComputed)
	}
	if len(ix.LayoutErrors) > 0 {
		t.Errorf("index records do not match the bytes: %q", ix.LayoutErrors)
	}
	if ix.Header.Library != mcap.Library || ix.Header.Profile != r.profile {
		t.Errorf("header %+v", ix.Header)
	}

	// Summary: schemas, channels, statistics.
	if !slices.EqualFunc(ix.Schemas, r.schemas, func(a, b schemaRecord) bool { return a == b }) {
		t.Errorf("schemas %+v, want %+v", ix.Schemas, r.schemas)
	}
	if !slices.EqualFunc(ix.Channels, r.channels, func(a, b channelRecord) bool {
		return a.ID == b.ID && a.SchemaID == b.SchemaID && a.Topic == b.Topic &&
			a.MessageEncoding == b.MessageEncoding && fmt.Sprint(a.Metadata) == fmt.Sprint(b.Metadata)
	}) {
		t.Errorf("channels %+v, want %+v", ix.Channels, r.channels)
	}
	st := ix.Statistics
	if st == nil {
		t.Fatal("no statistics record")
	}
	perChannel := map[string]int{}
	var start, end uint64
	for i, m := range r.messages {
		perChannel[strconv.Itoa(int(m.channel))]++
		if i == 0 || m.logTime < start {
			start = m.logTime
		}
		end = max(end, m.logTime)
	}
	counts := map[string]string{}
	for k, v := range perChannel {
		counts[k] = strconv.Itoa(v)
	}
	if st.MessageCount != strconv.Itoa(len(r.messages)) || st.SchemaCount != len(r.schemas) ||
		st.ChannelCount != len(r.channels) || st.AttachmentCount != 0 || st.MetadataCount != 0 ||
		st.ChunkCount != chunks || st.MessageStartTime != strconv.FormatUint(start, 10) ||
		st.MessageEndTime != strconv.FormatUint(end, 10) || fmt.Sprint(st.ChannelMessageCounts) != fmt.Sprint(counts) {
		t.Errorf("statistics %+v; wrote %d messages %d..%d, %d schemas, %d channels, %d chunks, per channel %v",
			*st, len(r.messages), start, end, len(r.schemas), len(r.channels), chunks, counts)
	}
	if fmt.Sprint(ix.PerChannel) != fmt.Sprint(perChannel) {
		t.Errorf("indexed reader per channel %v, wrote %v", ix.PerChannel, perChannel)
	}
	return rep
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d read %s, wrote %s", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(got), len(want))
}

// annexB returns an H.264 access unit in Annex B form: start codes and
// NAL unit headers of a keyframe (SPS, PPS, IDR slice) or a P slice, with a
// payload of n random bytes.
func annexB(rng *rand.Rand, key bool, n int) []byte {
	var b []byte
	if key {
		b = append(b, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40) // SPS, baseline 3.1
		b = append(b, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80)                                           // PPS
		b = append(b, 0, 0, 1, 0x65, 0x88, 0x84)                                                    // IDR slice
	} else {
		b = append(b, 0, 0, 1, 0x41, 0x9a, 0x02) // non-IDR slice
	}
	for range n {
		b = append(b, byte(rng.IntN(256))|1) // no emulated start codes
	}
	return b
}

func TestChannelsAcrossManyChunks(t *testing.T) {
	t.Parallel()
	r := newRecording(t, mcap.Options{Profile: "x-sdr", ChunkSize: 16 << 10})
	rng := rand.New(rand.NewPCG(1, 2))
	video, err := r.w.AddCompressedVideoChannel("/video/front", map[string]string{"codec": "h264"})
	if err != nil {
		t.Fatal(err)
	}
	r.schemas = append(r.schemas, schemaFor(mcap.CompressedVideoSchemaName, mcap.JSONSchemaEncoding, mcap.CompressedVideoSchema(), 1))
	r.channels = append(r.channels, channelRecord{ID: video, SchemaID: 1, Topic: "/video/front", MessageEncoding: "json", Metadata: map[string]string{"codec": "h264"}})
	telemetry := r.channel(0, "/telemetry", "json", map[string]string{"subject": "telemetry.>"})
	commands := r.channel(0, "/commands", "json", nil)
	gate := r.channel(0, "/gate", "json", map[string]string{"kind": "events"})
	raw := r.channel(r.schema("sdr.Raw", "jsonschema", []byte(`{"type":"object"}`)), "/raw", "json", nil)

	const base = uint64(1_764_800_000_000_000_000)
	for i := range 5000 {
		at := base + uint64(i)*1_000_000
		switch i % 5 {
		case 0:
			frame, err := mcap.MarshalCompressedVideo(at, "front", "h264", annexB(rng, i%150 == 0, 200+rng.IntN(800)))
			if err != nil {
				t.Fatal(err)
			}
			r.message(video, at, frame)
		case 1:
			r.message(telemetry, at, fmt.Appendf(nil, `{"battery":%d,"speed":%.3f}`, rng.IntN(100), rng.Float64()))
		case 2:
			r.message(commands, at, fmt.Appendf(nil, `{"linear":{"x":%.2f},"angular":{"z":0}}`, rng.Float64()))
		case 3:
			r.message(gate, at, fmt.Appendf(nil, `{"event":"open","seq":%d}`, i))
		case 4:
			r.message(raw, at, []byte{}) // an empty message
		}
	}
	rep := r.close()
	if n := len(rep.Indexed.ChunkIndexes); n < 20 {
		t.Errorf("%d chunks for %d bytes at a 16 KiB target", n, rep.Size)
	}
	for i, ci := range rep.Indexed.ChunkIndexes {
		size, _ := strconv.Atoi(ci.UncompressedSize)
		if size > 16<<10 {
			t.Errorf("chunk %d holds %d bytes of small messages, over the 16 KiB target", i, size)
		}
	}
}

// schemaFor is the schema record a test expects for data.
func schemaFor(name, encoding string, data []byte, id uint16) schemaRecord {
	sum := sha256.Sum256(data)
	s := schemaRecord{ID: id, Name: name, Encoding: encoding}
	s.Data.SHA256 = hex.EncodeToString(sum[:])
	return s
}

func TestMessageLargerThanChunk(t *testing.T) {
	t.Parallel()
	r := newRecording(t, mcap.Options{}) // the default 1 MiB target
	ch := r.channel(0, "/blob", "json", nil)
	rng := rand.New(rand.NewPCG(3, 4))
	small := func(at uint64) { r.message(ch, at, fmt.Appendf(nil, `{"n":%d}`, rng.IntN(1000))) }
	for i := range 10 {
		small(uint64(i))
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB
	r.message(ch, 10, big)
	for i := range 10 {
		small(uint64(11 + i))
	}
	rep := r.close()
	// Three chunks: the small messages before, the big one alone, the rest.
	cis := rep.Indexed.ChunkIndexes
	if len(cis) != 3 {
		t.Fatalf("%d chunks, want 3: %+v", len(cis), cis)
	}
	if size, _ := strconv.Atoi(cis[1].UncompressedSize); size <= len(big) || cis[1].MessageStartTime != "10" || cis[1].MessageEndTime != "10" {
		t.Errorf("the 3 MiB message's chunk: %+v", cis[1])
	}
	if rep.Stream.Chunks[1].Messages != 1 {
		t.Errorf("the 3 MiB message shares its chunk with %d others", rep.Stream.Chunks[1].Messages-1)
	}
}

func TestOutOfOrderLogTimes(t *testing.T) {
	t.Parallel()
	r := newRecording(t, mcap.Options{ChunkSize: 2 << 10})
	a := r.channel(0, "/a", "json", nil)
	b := r.channel(0, "/b", "json", nil)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		// Mostly rising, with jitter that goes back in time, repeats and
		// the odd message from long ago.
		at := uint64(1_000_000 + i*100 - rng.IntN(500))
		if i%97 == 0 {
			at = uint64(rng.IntN(1000))
		}
		ch := a
		if rng.IntN(3) == 0 {
			ch = b
		}
		r.message(ch, at, fmt.Appendf(nil, `{"i":%d}`, i))
		if i%10 == 0 {
			r.message(ch, at, []byte(`{"same":"time"}`))
		}
	}
	rep := r.close()
	if len(rep.Indexed.ChunkIndexes) < 10 {
		t.Errorf("only %d chunks", len(rep.Indexed.ChunkIndexes))
	}
}

func TestEmptyRecording(t *testing.T) {
	t.Parallel()
	t.Run("nothing", func(t *testing.T) {
		t.Parallel()
		rep := newRecording(t, mcap.Options{}).close()
		if rep.Indexed.Statistics.MessageStartTime != "0" || len(rep.Indexed.ChunkIndexes) != 0 {
			t.Errorf("empty file: %+v", rep.Indexed)
		}
	})
	t.Run("channels without messages", func(t *testing.T) {
		t.Parallel()
		r := newRecording(t, mcap.Options{Profile: "x-sdr"})
		r.channel(0, "/telemetry", "json", nil)
		r.channel(r.schema("s", "jsonschema", []byte(`{}`)), "/video", "json", map[string]string{"k": "v"})
		r.close()
	})
}

func TestCompressedVideo(t *testing.T) {
	t.Parallel()
	r := newRecording(t, mcap.Options{ChunkSize: 64 << 10})
	id, err := r.w.AddCompressedVideoChannel("/video", nil)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := r.w.AddCompressedVideoChannel("/video/rear", nil)
	if err != nil {
		t.Fatal(err)
	}
	// One schema for both channels.
	r.schemas = append(r.schemas, schemaFor(mcap.CompressedVideoSchemaName, "jsonschema", mcap.CompressedVideoSchema(), 1))
	r.channels = append(r.channels,
		channelRecord{ID: id, SchemaID: 1, Topic: "/video", MessageEncoding: "json", Metadata: map[string]string{}},
		channelRecord{ID: id2, SchemaID: 1, Topic: "/video/rear", MessageEncoding: "json", Metadata: map[string]string{}})
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 300 {
		at := uint64(1_764_800_000_000_000_000) + uint64(i)*33_333_333
		for _, ch := range []uint16{id, id2} {
			frame, err := mcap.MarshalCompressedVideo(at, "camera", "h264", annexB(rng, i%30 == 0, 500+rng.IntN(4000)))
			if err != nil {
				t.Fatal(err)
			}
			r.message(ch, at, frame)
		}
	}
	r.close()
}

// TestCorruptChunk flips one byte of a message inside a chunk: both readers
// must report the chunk's CRC, and the data section CRC must no longer
// match, so the CRCs that the other tests see pass can fail.
func TestCorruptChunk(t *testing.T) {
	t.Parallel()
	r := newRecording(t, mcap.Options{ChunkSize: 4 << 10})
	ch := r.channel(0, "/a", "json", nil)
	for i := range 200 {
		r.message(ch, uint64(i), fmt.Appendf(nil, `{"value":%d}`, i))
	}
	rep := r.close()
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	// The second chunk's last byte is the last byte of its last message.
	cis := rep.Indexed.ChunkIndexes
	if len(cis) < 2 {
		t.Fatalf("%d chunks", len(cis))
	}
	corrupt := slices.Clone(b)
	start, _ := strconv.Atoi(cis[1].ChunkStartOffset)
	length, _ := strconv.Atoi(cis[1].ChunkLength)
	at := start + length - 1
	if corrupt[at] != '}' {
		t.Fatalf("byte %d is %q, not the end of a JSON message", at, corrupt[at])
	}
	corrupt[at] = ']'
	path := filepath.Join(t.TempDir(), "corrupt.mcap")
	if err := os.WriteFile(path, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := check(t, path)
	for name, e := range map[string]*string{"stream": bad.Stream.Error, "indexed": bad.Indexed.Error} {
		if e == nil || !bytes.Contains([]byte(*e), []byte("Incorrect chunk CRC")) {
			t.Errorf("%s reader on a corrupt chunk: error %v, want an incorrect chunk CRC", name, deref(e))
		}
	}
	if bad.Indexed.DataSectionCRC == bad.Indexed.DataSectionCRCComputed {
		t.Errorf("data section crc %08x still matches after the corruption", bad.Indexed.DataSectionCRC)
	}

	// A flipped byte in the summary breaks the summary CRC.
	corrupt = slices.Clone(b)
	summaryStart, _ := strconv.Atoi(rep.Indexed.Footer.SummaryStart)
	corrupt[summaryStart+20] ^= 0x01
	if err := os.WriteFile(path, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	bad = check(t, path)
	if e := bad.Indexed.Error; e == nil || !bytes.Contains([]byte(*e), []byte("Incorrect summary CRC")) {
		t.Errorf("indexed reader on a corrupt summary: error %v, want an incorrect summary CRC", deref(e))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return strconv.Quote(*s)
}
