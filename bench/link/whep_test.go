package main

import (
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// fua returns the RTP packet seq of a frame: a FU-A fragment of a NAL unit
// of type nal, first and last as given.
func fua(seq uint16, nal byte, first, last bool) *rtp.Packet {
	fu := nal & 0x1f
	if first {
		fu |= 0x80
	}
	if last {
		fu |= 0x40
	}
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Marker: last}, Payload: []byte{0x60 | 28, fu, 0xAA}}
}

// frame3 is a frame of three packets from seq.
func frame3(seq uint16, nal byte) []*rtp.Packet {
	return []*rtp.Packet{fua(seq, nal, true, false), fua(seq+1, nal, false, false), fua(seq+2, nal, false, true)}
}

type jbRecorder struct {
	frames [][]uint16
	lost   int
}

func newJB(r *jbRecorder, wait time.Duration) *jitterBuffer {
	return &jitterBuffer{pkts: map[uint16]arrival{}, maxWait: wait, needKey: true,
		emit: func(f []*rtp.Packet) {
			var s []uint16
			for _, p := range f {
				s = append(s, p.SequenceNumber)
			}
			r.frames = append(r.frames, s)
		},
		lost: func() { r.lost++ }}
}

func TestJitterBufferInOrder(t *testing.T) {
	t.Parallel()
	var r jbRecorder
	jb := newJB(&r, 200*time.Millisecond)
	now := time.Unix(100, 0)
	// Starts at the first frame start, across the sequence number's wrap.
	jb.push(fua(65533, 5, false, true), now) // the tail of a frame before: skipped
	for _, p := range append(frame3(65534, 5), frame3(1, 1)...) {
		jb.push(p, now)
	}
	jb.drain(now)
	if want := [][]uint16{{65534, 65535, 0}, {1, 2, 3}}; !slices.EqualFunc(r.frames, want, slices.Equal) || r.lost != 0 {
		t.Fatalf("frames %v lost %d, want %v and none lost", r.frames, r.lost, want)
	}
}

// A frame with a missing packet waits for the retransmission; one that
// comes in time completes it, one that does not come in maxWait (after a
// later packet) gives the frame up and moves to the next frame.
func TestJitterBufferLoss(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(100, 0)
	for _, tc := range []struct {
		name       string
		retransmit bool
		want       [][]uint16
		lost       int
	}{
		{"retransmitted", true, [][]uint16{{10, 11, 12}, {13, 14, 15}, {16, 17, 18}}, 0},
		{"never came", false, [][]uint16{{10, 11, 12}, {16, 17, 18}}, 1},
	} {
		var r jbRecorder
		jb := newJB(&r, 200*time.Millisecond)
		pkts := append(append(frame3(10, 5), frame3(13, 1)...), frame3(16, 1)...)
		for _, p := range pkts {
			if p.SequenceNumber != 14 {
				jb.push(p, t0)
			}
		}
		jb.drain(t0.Add(100 * time.Millisecond)) // within maxWait: the frame waits
		if len(r.frames) != 1 || r.lost != 0 {
			t.Fatalf("%s: before maxWait: frames %v lost %d, want the first alone", tc.name, r.frames, r.lost)
		}
		if tc.retransmit {
			jb.push(pkts[4], t0.Add(150*time.Millisecond))
		}
		jb.drain(t0.Add(250 * time.Millisecond))
		if !slices.EqualFunc(r.frames, tc.want, slices.Equal) || r.lost != tc.lost {
			t.Errorf("%s: frames %v lost %d, want %v and %d lost", tc.name, r.frames, r.lost, tc.want, tc.lost)
		}
		// A retransmission after the frame was given up is dropped.
		jb.push(pkts[4], t0.Add(300*time.Millisecond))
		jb.drain(t0.Add(300 * time.Millisecond))
		if len(r.frames) != len(tc.want) {
			t.Errorf("%s: a late retransmission made a frame: %v", tc.name, r.frames)
		}
	}
}
