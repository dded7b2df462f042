package shmring

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// shmVectors are the region entries of the wire-contract vectors (the header
// and CRC entries are package frame's).
type shmVectors struct {
	Regions []struct {
		File       string `json:"file"`
		Sequence   uint64 `json:"sequence"`
		WriteLen   uint64 `json:"write_len"`
		FrameID    uint64 `json:"frame_id"`
		FrameSeq   uint64 `json:"frame_seq"`
		Flags      uint16 `json:"flags"`
		Codec      uint16 `json:"codec"`
		PayloadHex string `json:"payload_hex"`
	} `json:"regions"`
}

const vectorDir = "../testdata/vectors"

func loadVectors(t testing.TB) shmVectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "shm_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v shmVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Regions) == 0 {
		t.Fatal("vectors incomplete: no regions")
	}
	return v
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectorRegion parses the region file both as bytes (ParseRegion) and
// through a real mapping with the Reader.
func TestVectorRegion(t *testing.T) {
	t.Parallel()
	for _, v := range loadVectors(t).Regions {
		region, err := os.ReadFile(filepath.Join(vectorDir, v.File))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseRegion(region, true)
		if err != nil {
			t.Fatalf("%s: %v", v.File, err)
		}
		payload := mustHex(t, v.PayloadHex)
		if c.Sequence != v.Sequence || c.WriteLen != v.WriteLen || c.Header.FrameID != v.FrameID ||
			c.Header.FrameSeq != v.FrameSeq || c.Header.Flags != v.Flags || uint16(c.Header.Codec) != v.Codec ||
			!bytes.Equal(c.Payload, payload) {
			t.Errorf("%s: got %+v", v.File, c)
		}
		// Unaligned input takes the copying path.
		if _, err := ParseRegion(append([]byte{0}, region...)[1:], true); err != nil {
			t.Errorf("%s unaligned: %v", v.File, err)
		}

		path := filepath.Join(t.TempDir(), "frames")
		if err := os.WriteFile(path, region, 0o644); err != nil {
			t.Fatal(err)
		}
		frames, r := collect(t, ReaderConfig{Path: path}, 1)
		f := (<-frames)
		if f.Sequence != v.Sequence || f.Header.FrameSeq != v.FrameSeq || !f.Header.Keyframe() || !bytes.Equal(f.Payload, payload) {
			t.Errorf("%s via reader: got %+v", v.File, f)
		}
		if got := r.Sequence(); got != v.Sequence {
			t.Errorf("Sequence() = %d, want %d", got, v.Sequence)
		}
	}
}
