//go:build cgo

package nvenc

import (
	"bytes"
	"testing"
)

// stripVUI rewrites an SPS without its VUI, the way some encoders write it.
func stripVUI(t *testing.T, nal []byte) []byte {
	t.Helper()
	s, err := ParseSPS(nal)
	if err != nil {
		t.Fatal(err)
	}
	rbsp := unescapeRBSP(nal[1:])
	w := &bitWriter{}
	w.copyBits(rbsp, s.vuiFlagPos)
	w.u(1, 0)
	w.u(1, 1)
	for w.nbit%8 != 0 {
		w.u(1, 0)
	}
	return append([]byte{nal[0]}, escapeRBSP(w.b)...)
}

// replaceSPS swaps the SPS NAL unit of an access unit.
func replaceSPS(au, sps []byte) []byte {
	var out bytes.Buffer
	for _, n := range SplitNALUnits(au) {
		if n[0]&0x1f == 7 {
			n = sps
		}
		out.Write([]byte{0, 0, 0, 1})
		out.Write(n)
	}
	return out.Bytes()
}

func TestPatchSPSAddsBitstreamRestriction(t *testing.T) {
	t.Parallel()
	_, out := encodePattern(t, Config{Width: 320, Height: 240, GOP: 100, Backends: []string{"libx264"}}, 10, nil)
	var sps []byte
	for _, n := range SplitNALUnits(out.packets[0].Data) {
		if n[0]&0x1f == 7 {
			sps = n
		}
	}
	orig, err := ParseSPS(sps)
	if err != nil {
		t.Fatal(err)
	}
	// Unchanged when already right.
	if p, err := PatchSPS(sps); err != nil || !bytes.Equal(p, sps) {
		t.Fatalf("PatchSPS changed a good SPS: %v", err)
	}
	bare := stripVUI(t, sps)
	s, err := ParseSPS(bare)
	if err != nil || s.VUI || s.Width != 320 || s.Height != 240 {
		t.Fatalf("stripped SPS: %+v %v", s, err)
	}
	patched, err := PatchSPS(bare)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseSPS(patched)
	if err != nil {
		t.Fatal(err)
	}
	if !p.VUI || !p.BitstreamRestriction || p.MaxNumReorderFrames != 0 || p.MaxDecFrameBuffering < 1 ||
		p.Width != orig.Width || p.Height != orig.Height || p.CodecString() != orig.CodecString() {
		t.Fatalf("patched SPS %+v, original %+v", p, orig)
	}
	// FFmpeg decodes the stream with the patched SPS, one picture per
	// access unit.
	pkts := append([]Packet(nil), out.packets...)
	pkts[0] = Packet{Data: replaceSPS(pkts[0].Data, patched), Keyframe: true}
	if pics := decodeAll(t, 1, pkts); len(pics) != 10 {
		t.Fatalf("decoded %d pictures", len(pics))
	}
	// patchAccessUnit does the same on a whole access unit.
	au, changed, err := patchAccessUnit(replaceSPS(out.packets[0].Data, bare))
	if err != nil || !changed {
		t.Fatalf("patchAccessUnit: changed %v, %v", changed, err)
	}
	if au2, changed, _ := patchAccessUnit(au); changed || !bytes.Equal(au2, au) {
		t.Fatal("patching twice changed the access unit again")
	}
}

func TestParseSPSRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{nil, {0x67}, {0x68, 1, 2, 3, 4}, {0x67, 0x42, 0xc0, 0x1e}, {0x67, 0x64, 0, 0x1f, 0, 0, 0, 0, 0, 0}} {
		if _, err := ParseSPS(b); err == nil {
			t.Errorf("ParseSPS(% x): no error", b)
		}
		if _, err := PatchSPS(b); err == nil {
			t.Errorf("PatchSPS(% x): no error", b)
		}
	}
}

func FuzzParseSPS(f *testing.F) {
	f.Add([]byte{0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseSPS(b); err == nil {
			if p, err := PatchSPS(b); err == nil {
				if q, err := ParseSPS(p); err != nil || !q.BitstreamRestriction || q.Width != s.Width {
					t.Fatalf("patched SPS does not round-trip: %v", err)
				}
			}
		}
	})
}
