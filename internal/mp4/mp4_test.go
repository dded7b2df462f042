package mp4

import (
	"bytes"
	"testing"
)

// TestTimeline: recorded nanoseconds become strictly increasing 90 kHz
// ticks from 0; a step back or a repeat moves that frame one average
// interval after the one before, and later frames keep their spacing.
func TestTimeline(t *testing.T) {
	t.Parallel()
	const base = uint64(1764238272_000_000_000)
	const f = uint64(33_333_333) // 30 fps
	for _, tc := range []struct {
		name    string
		ts      []uint64
		want    []int64
		rebased int
	}{
		{"steady 30 fps", []uint64{base, base + f, base + 2*f, base + 3*f}, []int64{0, 3000, 6000, 9000}, 0},
		{"uneven", []uint64{base, base + 10_000_000, base + 50_000_000}, []int64{0, 900, 4500}, 0},
		{"repeat", []uint64{base, base + f, base + f, base + 2*f}, []int64{0, 3000, 6000, 9000}, 1},
		{"step back 5 s", []uint64{base, base + f, base + 2*f, base + 2*f - 5_000_000_000, base + 3*f - 5_000_000_000}, []int64{0, 3000, 6000, 9000, 12000}, 1},
		{"restart from 0", []uint64{base, base + f, 0, f}, []int64{0, 3000, 6000, 9000}, 1},
		{"step back on the second frame", []uint64{base, base - f, base}, []int64{0, 3000, 6000}, 1},
		{"sub-tick apart", []uint64{base, base + 1, base + 2}, []int64{0, 3000, 6000}, 2},
		{"rounding", []uint64{base, base + 5_556, base + 27_777}, []int64{0, 1, 2}, 0},
		{"extremes", []uint64{0, 1<<64 - 1, 1 << 63}, []int64{0, 1660206966633860, 1660206966633860 + 1660206966633860}, 1},
	} {
		var tl timeline
		var got []int64
		for _, ts := range tc.ts {
			got = append(got, tl.place(ts))
		}
		if len(got) != len(tc.want) || tl.rebased != tc.rebased {
			t.Errorf("%s: %v, %d rebased; want %v, %d", tc.name, got, tl.rebased, tc.want, tc.rebased)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

// TestTicks: rounding to nearest both ways, no overflow at the extremes.
func TestTicks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		origin, ts uint64
		want       int64
	}{
		{10, 10, 0},
		{0, 5_555, 0},
		{0, 5_556, 1},
		{5_556, 0, -1},
		{0, 1_000_000_000, 90000},
		{1_000_000_000, 0, -90000},
		{0, 1<<64 - 1, 1660206966633860},
		{1<<64 - 1, 0, -1660206966633860},
	} {
		if got := ticks(tc.origin, tc.ts); got != tc.want {
			t.Errorf("ticks(%d, %d) = %d, want %d", tc.origin, tc.ts, got, tc.want)
		}
	}
}

// TestTimelineInterval: the last frame's duration is the average interval,
// 1/30 s for a single frame.
func TestTimelineInterval(t *testing.T) {
	t.Parallel()
	var tl timeline
	if d := tl.interval(); d != 3000 {
		t.Errorf("no frame: %d ticks, want 3000", d)
	}
	tl.place(5)
	if d := tl.interval(); d != 3000 {
		t.Errorf("one frame: %d ticks, want 3000", d)
	}
	tl.place(5 + 40_000_000)
	tl.place(5 + 100_000_000)
	if d := tl.interval(); d != 4500 {
		t.Errorf("0, 40, 100 ms: %d ticks, want 4500 (50 ms)", d)
	}
}

// TestNALUnits: start codes of 3 and 4 bytes, trailing zeros, garbage
// without a start code.
func TestNALUnits(t *testing.T) {
	t.Parallel()
	au := []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4, 5, 0}
	nals, sps, pps := nalUnits(au)
	want := [][]byte{{0x67, 1, 2}, {0x68, 3}, {0x65, 4, 5}}
	if len(nals) != len(want) || !sps || !pps {
		t.Fatalf("%x sps=%v pps=%v, want %x", nals, sps, pps, want)
	}
	for i := range want {
		if !bytes.Equal(nals[i], want[i]) {
			t.Fatalf("%x, want %x", nals, want)
		}
	}
	if x := extradata(nals); !bytes.Equal(x, []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3}) {
		t.Errorf("extradata % x", x)
	}
	for _, bad := range [][]byte{nil, {0, 0, 1}, {0, 0, 0, 1, 0, 0}, {9, 9, 9, 9}} {
		if nals, _, _ := nalUnits(bad); len(nals) != 0 {
			t.Errorf("% x: %x, want none", bad, nals)
		}
	}
	if _, sps, pps := nalUnits([]byte{0, 0, 1, 0x41, 7}); sps || pps {
		t.Error("a p-slice reported sps or pps")
	}
}
