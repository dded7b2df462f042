package nvenc

import (
	"bytes"
	"errors"
	"fmt"
)

// SplitNALUnits returns the NAL units of an Annex-B byte stream, without
// their start codes (emulation prevention bytes left in place).
func SplitNALUnits(b []byte) [][]byte {
	var out [][]byte
	start := -1
	i := 0
	for i+2 < len(b) {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				for end > start && b[end-1] == 0 {
					end--
				}
				out = append(out, b[start:end])
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// unescapeRBSP removes emulation prevention bytes (00 00 03 -> 00 00).
func unescapeRBSP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	zeros := 0
	for _, x := range b {
		if zeros >= 2 && x == 3 {
			zeros = 0
			continue
		}
		if x == 0 {
			zeros++
		} else {
			zeros = 0
		}
		out = append(out, x)
	}
	return out
}

// escapeRBSP inserts emulation prevention bytes.
func escapeRBSP(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/64+2)
	zeros := 0
	for _, x := range b {
		if zeros >= 2 && x <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		if x == 0 {
			zeros++
		} else {
			zeros = 0
		}
		out = append(out, x)
	}
	return out
}

var errShortSPS = errors.New("sps ends early")

type bitReader struct {
	b   []byte
	pos int // in bits
}

func (r *bitReader) u(n int) (uint32, error) {
	var v uint32
	for i := 0; i < n; i++ {
		if r.pos >= len(r.b)*8 {
			return 0, errShortSPS
		}
		v = v<<1 | uint32(r.b[r.pos/8]>>(7-r.pos%8)&1)
		r.pos++
	}
	return v, nil
}

func (r *bitReader) ue() (uint32, error) {
	zeros := 0
	for {
		bit, err := r.u(1)
		if err != nil {
			return 0, err
		}
		if bit == 1 {
			break
		}
		zeros++
		if zeros > 31 {
			return 0, errors.New("sps: exp-golomb code longer than 32 bits")
		}
	}
	rest, err := r.u(zeros)
	if err != nil {
		return 0, err
	}
	return (1<<zeros - 1) + rest, nil
}

func (r *bitReader) se() (int32, error) {
	v, err := r.ue()
	if err != nil {
		return 0, err
	}
	if v%2 == 1 {
		return int32((v + 1) / 2), nil
	}
	return -int32(v / 2), nil
}

type bitWriter struct {
	b    []byte
	nbit int
}

func (w *bitWriter) u(n int, v uint32) {
	for i := n - 1; i >= 0; i-- {
		if w.nbit%8 == 0 {
			w.b = append(w.b, 0)
		}
		if v>>i&1 == 1 {
			w.b[len(w.b)-1] |= 0x80 >> (w.nbit % 8)
		}
		w.nbit++
	}
}

func (w *bitWriter) ue(v uint32) {
	v++
	n := 0
	for x := v; x > 1; x >>= 1 {
		n++
	}
	w.u(n, 0)
	w.u(n+1, v)
}

// copyBits copies the first n bits of r.b.
func (w *bitWriter) copyBits(src []byte, n int) {
	r := bitReader{b: src}
	for n > 0 {
		k := min(n, 24)
		v, _ := r.u(k)
		w.u(k, v)
		n -= k
	}
}

// SPS holds the fields of an H.264 sequence parameter set that matter for
// low-latency playback.
type SPS struct {
	ProfileIDC     uint8
	Constraints    uint8 // constraint_set0..5 flags and reserved bits
	LevelIDC       uint8
	Width, Height  int // in pixels, cropping applied
	MaxNumRefFrame uint32
	VUI            bool
	// BitstreamRestriction is set when the VUI carries
	// bitstream_restriction; MaxNumReorderFrames and MaxDecFrameBuffering
	// are only meaningful then.
	BitstreamRestriction bool
	MaxNumReorderFrames  uint32
	MaxDecFrameBuffering uint32

	vuiFlagPos         int // bit offset of vui_parameters_present_flag in the RBSP
	restrictionFlagPos int // bit offset of bitstream_restriction_flag, when VUI
	restrictionVals    [5]uint32
}

// CodecString is the RFC 6381 name browsers take, e.g. avc1.42E01E.
func (s SPS) CodecString() string {
	return fmt.Sprintf("avc1.%02X%02X%02X", s.ProfileIDC, s.Constraints, s.LevelIDC)
}

// ConstrainedBaseline reports profile_idc 66 with constraint_set1.
func (s SPS) ConstrainedBaseline() bool { return s.ProfileIDC == 66 && s.Constraints&0x40 != 0 }

// ParseSPS parses an SPS NAL unit (header byte included, start code not).
func ParseSPS(nal []byte) (SPS, error) {
	if len(nal) < 4 || nal[0]&0x1f != 7 {
		return SPS{}, fmt.Errorf("parsing sps: not an SPS NAL unit (%d bytes)", len(nal))
	}
	rbsp := unescapeRBSP(nal[1:])
	if len(rbsp) < 4 {
		return SPS{}, fmt.Errorf("parsing sps: %d bytes after unescaping", len(rbsp))
	}
	r := &bitReader{b: rbsp}
	var s SPS
	s.ProfileIDC, s.Constraints, s.LevelIDC = rbsp[0], rbsp[1], rbsp[2]
	r.pos = 24
	fail := func(err error) (SPS, error) { return SPS{}, fmt.Errorf("parsing sps: %w", err) }
	if _, err := r.ue(); err != nil {
		return fail(err)
	}
	chroma := uint32(1)
	switch s.ProfileIDC {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		var err error
		if chroma, err = r.ue(); err != nil {
			return fail(err)
		}
		if chroma == 3 {
			if _, err := r.u(1); err != nil {
				return fail(err)
			}
		}
		for i := 0; i < 2; i++ {
			if _, err := r.ue(); err != nil {
				return fail(err)
			}
		}
		if _, err := r.u(1); err != nil {
			return fail(err)
		}
		present, err := r.u(1)
		if err != nil {
			return fail(err)
		}
		if present == 1 {
			n := 8
			if chroma == 3 {
				n = 12
			}
			for i := 0; i < n; i++ {
				f, err := r.u(1)
				if err != nil {
					return fail(err)
				}
				if f == 1 {
					size := 16
					if i >= 6 {
						size = 64
					}
					last, next := int32(8), int32(8)
					for j := 0; j < size; j++ {
						if next != 0 {
							d, err := r.se()
							if err != nil {
								return fail(err)
							}
							next = (last + d + 256) % 256
						}
						if next != 0 {
							last = next
						}
					}
				}
			}
		}
	}
	if _, err := r.ue(); err != nil { // log2_max_frame_num_minus4
		return fail(err)
	}
	pocType, err := r.ue()
	if err != nil {
		return fail(err)
	}
	switch pocType {
	case 0:
		if _, err := r.ue(); err != nil {
			return fail(err)
		}
	case 1:
		if _, err := r.u(1); err != nil {
			return fail(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := r.se(); err != nil {
				return fail(err)
			}
		}
		n, err := r.ue()
		if err != nil {
			return fail(err)
		}
		if n > 255 {
			return fail(fmt.Errorf("num_ref_frames_in_pic_order_cnt_cycle %d", n))
		}
		for i := uint32(0); i < n; i++ {
			if _, err := r.se(); err != nil {
				return fail(err)
			}
		}
	}
	if s.MaxNumRefFrame, err = r.ue(); err != nil {
		return fail(err)
	}
	if _, err := r.u(1); err != nil {
		return fail(err)
	}
	wmbs, err := r.ue()
	if err != nil {
		return fail(err)
	}
	hmaps, err := r.ue()
	if err != nil {
		return fail(err)
	}
	frameMbsOnly, err := r.u(1)
	if err != nil {
		return fail(err)
	}
	if frameMbsOnly == 0 {
		if _, err := r.u(1); err != nil {
			return fail(err)
		}
	}
	if _, err := r.u(1); err != nil {
		return fail(err)
	}
	s.Width = int(wmbs+1) * 16
	s.Height = int(hmaps+1) * 16 * int(2-frameMbsOnly)
	crop, err := r.u(1)
	if err != nil {
		return fail(err)
	}
	if crop == 1 {
		var c [4]uint32
		for i := range c {
			if c[i], err = r.ue(); err != nil {
				return fail(err)
			}
		}
		cx, cy := 2, 2*int(2-frameMbsOnly)
		if chroma == 0 {
			cx, cy = 1, int(2-frameMbsOnly)
		}
		s.Width -= cx * int(c[0]+c[1])
		s.Height -= cy * int(c[2]+c[3])
	}
	s.vuiFlagPos = r.pos
	vui, err := r.u(1)
	if err != nil {
		return fail(err)
	}
	if vui == 0 {
		return s, nil
	}
	s.VUI = true
	if err := skipVUIUntilRestriction(r); err != nil {
		return fail(err)
	}
	s.restrictionFlagPos = r.pos
	br, err := r.u(1)
	if err != nil {
		return fail(err)
	}
	if br == 1 {
		s.BitstreamRestriction = true
		if _, err := r.u(1); err != nil {
			return fail(err)
		}
		for i := range s.restrictionVals {
			if s.restrictionVals[i], err = r.ue(); err != nil {
				return fail(err)
			}
		}
		s.MaxNumReorderFrames = s.restrictionVals[4]
		if s.MaxDecFrameBuffering, err = r.ue(); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

func skipVUIUntilRestriction(r *bitReader) error {
	flag := func() (bool, error) { v, err := r.u(1); return v == 1, err }
	if f, err := flag(); err != nil {
		return err
	} else if f { // aspect_ratio_info
		idc, err := r.u(8)
		if err != nil {
			return err
		}
		if idc == 255 {
			if _, err := r.u(32); err != nil {
				return err
			}
		}
	}
	if f, err := flag(); err != nil {
		return err
	} else if f { // overscan
		if _, err := r.u(1); err != nil {
			return err
		}
	}
	if f, err := flag(); err != nil {
		return err
	} else if f { // video_signal_type
		if _, err := r.u(4); err != nil {
			return err
		}
		if c, err := flag(); err != nil {
			return err
		} else if c {
			if _, err := r.u(24); err != nil {
				return err
			}
		}
	}
	if f, err := flag(); err != nil {
		return err
	} else if f { // chroma_loc_info
		for i := 0; i < 2; i++ {
			if _, err := r.ue(); err != nil {
				return err
			}
		}
	}
	if f, err := flag(); err != nil {
		return err
	} else if f { // timing_info
		if _, err := r.u(32); err != nil {
			return err
		}
		if _, err := r.u(32); err != nil {
			return err
		}
		if _, err := r.u(1); err != nil {
			return err
		}
	}
	hrd := false
	for i := 0; i < 2; i++ { // nal, vcl hrd
		f, err := flag()
		if err != nil {
			return err
		}
		if f {
			hrd = true
			if err := skipHRD(r); err != nil {
				return err
			}
		}
	}
	if hrd {
		if _, err := r.u(1); err != nil {
			return err
		}
	}
	_, err := r.u(1) // pic_struct_present_flag
	return err
}

func skipHRD(r *bitReader) error {
	n, err := r.ue()
	if err != nil {
		return err
	}
	if n > 31 {
		return fmt.Errorf("hrd cpb_cnt_minus1 %d", n)
	}
	if _, err := r.u(8); err != nil {
		return err
	}
	for i := uint32(0); i <= n; i++ {
		for j := 0; j < 2; j++ {
			if _, err := r.ue(); err != nil {
				return err
			}
		}
		if _, err := r.u(1); err != nil {
			return err
		}
	}
	_, err = r.u(20)
	return err
}

// PatchSPS returns an SPS NAL unit that says max_num_reorder_frames = 0 in
// its VUI bitstream_restriction, adding the VUI or the restriction where
// the encoder left them out, so that decoders (Chromium's among them) output
// every picture as soon as it is decoded. An SPS that already says so is
// returned unchanged. Only for streams without B-frames.
func PatchSPS(nal []byte) ([]byte, error) {
	s, err := ParseSPS(nal)
	if err != nil {
		return nil, err
	}
	if s.BitstreamRestriction && s.MaxNumReorderFrames == 0 {
		return nal, nil
	}
	rbsp := unescapeRBSP(nal[1:])
	w := &bitWriter{}
	vals := [5]uint32{0, 0, 0, 16, 16} // max_bytes_per_pic_denom .. log2_max_mv_length_vertical
	if s.BitstreamRestriction {
		copy(vals[:4], s.restrictionVals[:4])
	}
	dpb := max(s.MaxNumRefFrame, 1)
	if s.VUI {
		w.copyBits(rbsp, s.restrictionFlagPos)
	} else {
		w.copyBits(rbsp, s.vuiFlagPos)
		w.u(1, 1) // vui_parameters_present_flag
		// aspect_ratio, overscan, video_signal_type, chroma_loc, timing,
		// nal_hrd, vcl_hrd, pic_struct: all absent.
		w.u(8, 0)
	}
	w.u(1, 1) // bitstream_restriction_flag
	w.u(1, 1) // motion_vectors_over_pic_boundaries_flag
	for _, v := range vals[:4] {
		w.ue(v)
	}
	w.ue(0)   // max_num_reorder_frames
	w.ue(dpb) // max_dec_frame_buffering
	w.u(1, 1) // rbsp_stop_one_bit
	for w.nbit%8 != 0 {
		w.u(1, 0)
	}
	out := append([]byte{nal[0]}, escapeRBSP(w.b)...)
	if _, err := ParseSPS(out); err != nil {
		return nil, fmt.Errorf("patching sps: result does not parse: %w", err)
	}
	return out, nil
}

// patchAccessUnit rewrites the SPS NAL units of an Annex-B access unit with
// PatchSPS; it returns the input when nothing changed.
func patchAccessUnit(au []byte) ([]byte, bool, error) {
	nals := SplitNALUnits(au)
	changed := false
	var out bytes.Buffer
	for _, n := range nals {
		if len(n) > 0 && n[0]&0x1f == 7 {
			p, err := PatchSPS(n)
			if err != nil {
				return au, false, err
			}
			if !bytes.Equal(p, n) {
				changed = true
				n = p
			}
		}
		out.Write([]byte{0, 0, 0, 1})
		out.Write(n)
	}
	if !changed {
		return au, false, nil
	}
	return out.Bytes(), true, nil
}
