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

// bitReader reads an RBSP bit by bit. The first failure sticks: later
// reads return 0 and err keeps that first error, so that a parser reads
// field after field and checks err once, and wherever a value read bounds
// a loop.
type bitReader struct {
	b   []byte
	pos int // in bits
	err error
}

// fail records err unless an error is recorded already.
func (r *bitReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// u reads an n-bit unsigned value (n <= 32).
func (r *bitReader) u(n int) uint32 {
	if r.err != nil {
		return 0
	}
	var v uint32
	for i := 0; i < n; i++ {
		if r.pos >= len(r.b)*8 {
			r.fail(errShortSPS)
			return 0
		}
		v = v<<1 | uint32(r.b[r.pos/8]>>(7-r.pos%8)&1)
		r.pos++
	}
	return v
}

// flag reads a one-bit flag.
func (r *bitReader) flag() bool { return r.u(1) == 1 }

// ue reads an unsigned Exp-Golomb value.
func (r *bitReader) ue() uint32 {
	zeros := 0
	for r.err == nil && r.u(1) == 0 {
		zeros++
		if zeros > 31 {
			r.fail(errors.New("sps: exp-golomb code longer than 32 bits"))
		}
	}
	rest := r.u(zeros)
	if r.err != nil {
		return 0
	}
	return (1<<zeros - 1) + rest
}

// se reads a signed Exp-Golomb value.
func (r *bitReader) se() int32 {
	v := r.ue()
	if v%2 == 1 {
		return int32((v + 1) / 2)
	}
	return -int32(v / 2)
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
		w.u(k, r.u(k))
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
	var s SPS
	s.ProfileIDC, s.Constraints, s.LevelIDC = rbsp[0], rbsp[1], rbsp[2]
	r := &bitReader{b: rbsp, pos: 24}
	r.ue() // seq_parameter_set_id
	chroma := uint32(1)
	switch s.ProfileIDC {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		chroma = r.ue() // chroma_format_idc
		if chroma == 3 {
			r.u(1) // separate_colour_plane_flag
		}
		r.ue()        // bit_depth_luma_minus8
		r.ue()        // bit_depth_chroma_minus8
		r.u(1)        // qpprime_y_zero_transform_bypass_flag
		if r.flag() { // seq_scaling_matrix_present_flag
			n := 8
			if chroma == 3 {
				n = 12
			}
			for i := 0; i < n; i++ {
				if r.flag() { // seq_scaling_list_present_flag[i]
					skipScalingList(r, i)
				}
			}
		}
	}
	r.ue()          // log2_max_frame_num_minus4
	switch r.ue() { // pic_order_cnt_type
	case 0:
		r.ue() // log2_max_pic_order_cnt_lsb_minus4
	case 1:
		r.u(1) // delta_pic_order_always_zero_flag
		r.se() // offset_for_non_ref_pic
		r.se() // offset_for_top_to_bottom_field
		n := r.ue()
		if n > 255 {
			r.fail(fmt.Errorf("num_ref_frames_in_pic_order_cnt_cycle %d", n))
		}
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.se() // offset_for_ref_frame[i]
		}
	}
	s.MaxNumRefFrame = r.ue()
	r.u(1) // gaps_in_frame_num_value_allowed_flag
	wmbs := r.ue()
	hmaps := r.ue()
	frameMbsOnly := r.u(1)
	if frameMbsOnly == 0 {
		r.u(1) // mb_adaptive_frame_field_flag
	}
	r.u(1) // direct_8x8_inference_flag
	s.Width = int(wmbs+1) * 16
	s.Height = int(hmaps+1) * 16 * int(2-frameMbsOnly)
	if r.flag() { // frame_cropping_flag
		var c [4]uint32
		for i := range c {
			c[i] = r.ue()
		}
		cx, cy := 2, 2*int(2-frameMbsOnly)
		if chroma == 0 {
			cx, cy = 1, int(2-frameMbsOnly)
		}
		s.Width -= cx * int(c[0]+c[1])
		s.Height -= cy * int(c[2]+c[3])
	}
	s.vuiFlagPos = r.pos
	if r.flag() { // vui_parameters_present_flag
		s.VUI = true
		skipVUIUntilRestriction(r)
		s.restrictionFlagPos = r.pos
		if r.flag() {
			s.BitstreamRestriction = true
			r.u(1) // motion_vectors_over_pic_boundaries_flag
			for i := range s.restrictionVals {
				s.restrictionVals[i] = r.ue()
			}
			s.MaxNumReorderFrames = s.restrictionVals[4]
			s.MaxDecFrameBuffering = r.ue()
		}
	}
	if r.err != nil {
		return SPS{}, fmt.Errorf("parsing sps: %w", r.err)
	}
	return s, nil
}

// skipScalingList passes over scaling_list i (16 coefficients for the
// first six, 64 for the others).
func skipScalingList(r *bitReader, i int) {
	size := 16
	if i >= 6 {
		size = 64
	}
	last, next := int32(8), int32(8)
	for j := 0; j < size; j++ {
		if next != 0 {
			next = (last + r.se() + 256) % 256 // delta_scale
		}
		if next != 0 {
			last = next
		}
	}
}

// skipVUIUntilRestriction passes over the VUI fields before
// bitstream_restriction_flag.
func skipVUIUntilRestriction(r *bitReader) {
	if r.flag() { // aspect_ratio_info_present_flag
		if r.u(8) == 255 { // aspect_ratio_idc: Extended_SAR
			r.u(32) // sar_width, sar_height
		}
	}
	if r.flag() { // overscan_info_present_flag
		r.u(1) // overscan_appropriate_flag
	}
	if r.flag() { // video_signal_type_present_flag
		r.u(4)        // video_format, video_full_range_flag
		if r.flag() { // colour_description_present_flag
			r.u(24) // colour_primaries, transfer_characteristics, matrix_coefficients
		}
	}
	if r.flag() { // chroma_loc_info_present_flag
		r.ue() // chroma_sample_loc_type_top_field
		r.ue() // chroma_sample_loc_type_bottom_field
	}
	if r.flag() { // timing_info_present_flag
		r.u(32) // num_units_in_tick
		r.u(32) // time_scale
		r.u(1)  // fixed_frame_rate_flag
	}
	hrd := false
	for i := 0; i < 2; i++ { // nal_, vcl_hrd_parameters_present_flag
		if r.flag() {
			hrd = true
			skipHRD(r)
		}
	}
	if hrd {
		r.u(1) // low_delay_hrd_flag
	}
	r.u(1) // pic_struct_present_flag
}

// skipHRD passes over hrd_parameters().
func skipHRD(r *bitReader) {
	n := r.ue() // cpb_cnt_minus1
	if n > 31 {
		r.fail(fmt.Errorf("hrd cpb_cnt_minus1 %d", n))
		return
	}
	r.u(8) // bit_rate_scale, cpb_size_scale
	for i := uint32(0); i <= n; i++ {
		r.ue() // bit_rate_value_minus1[i]
		r.ue() // cpb_size_value_minus1[i]
		r.u(1) // cbr_flag[i]
	}
	r.u(20) // initial_cpb_removal_delay_length_minus1 .. time_offset_length
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
