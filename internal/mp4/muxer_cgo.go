//go:build cgo

package mp4

import (
	"fmt"

	"github.com/asticode/go-astiav"
)

// compiled reports whether this build can write MP4 files.
const compiled = true

// muxer is FFmpeg's mp4 muxer writing one H.264 stream to a file.
type muxer struct {
	fc     *astiav.FormatContext
	pb     *astiav.IOContext
	stream *astiav.Stream
	pkt    *astiav.Packet
	tb     astiav.Rational
}

// openMuxer opens the file and writes the header. extradata holds the SPS
// and PPS in Annex B form: FFmpeg's mp4 muxer (5.1) turns them into the
// avcC box, and because the extradata is not already avcC it converts every
// packet from start codes to 4-byte lengths itself.
func openMuxer(path string, width, height int, extradata []byte) (m *muxer, err error) {
	m = &muxer{tb: astiav.NewRational(1, TimeBase)}
	defer func() {
		if err != nil {
			m.free()
			m = nil
		}
	}()
	if m.fc, err = astiav.AllocOutputFormatContext(nil, "mp4", path); err != nil {
		return nil, fmt.Errorf("allocating the mp4 muxer: %w", err)
	}
	if m.stream = m.fc.NewStream(nil); m.stream == nil {
		return nil, fmt.Errorf("adding the video stream")
	}
	cp := m.stream.CodecParameters()
	cp.SetMediaType(astiav.MediaTypeVideo)
	cp.SetCodecID(astiav.CodecIDH264)
	cp.SetWidth(width)
	cp.SetHeight(height)
	if err = cp.SetExtraData(extradata); err != nil {
		return nil, fmt.Errorf("setting the sps and pps (%d bytes): %w", len(extradata), err)
	}
	m.stream.SetTimeBase(m.tb)
	if m.pb, err = astiav.OpenIOContext(path, astiav.NewIOContextFlags(astiav.IOContextFlagWrite)); err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	m.fc.SetPb(m.pb)
	opts := astiav.NewDictionary()
	defer opts.Free()
	if err = opts.Set("movflags", "+faststart", 0); err != nil {
		return nil, fmt.Errorf("setting movflags: %w", err)
	}
	if err = m.fc.WriteHeader(opts); err != nil {
		return nil, fmt.Errorf("writing the mp4 header (%dx%d, %d bytes of sps and pps): %w", width, height, len(extradata), err)
	}
	m.pkt = astiav.AllocPacket()
	return m, nil
}

// write writes one access unit; pts and duration are in 90 kHz ticks.
func (m *muxer) write(pts, duration int64, keyframe bool, data []byte) error {
	if err := m.pkt.FromData(data); err != nil {
		return fmt.Errorf("copying %d bytes: %w", len(data), err)
	}
	defer m.pkt.Unref()
	m.pkt.SetPts(pts)
	m.pkt.SetDts(pts)
	m.pkt.SetDuration(duration)
	m.pkt.SetStreamIndex(m.stream.Index())
	if keyframe {
		m.pkt.SetFlags(astiav.NewPacketFlags(astiav.PacketFlagKey))
	}
	// WriteHeader may have chosen another time base for the stream.
	m.pkt.RescaleTs(m.tb, m.stream.TimeBase())
	if err := m.fc.WriteFrame(m.pkt); err != nil {
		return err
	}
	return nil
}

// finish writes the trailer (the index) and closes the file.
func (m *muxer) finish() error {
	if err := m.fc.WriteTrailer(); err != nil {
		return fmt.Errorf("writing the mp4 index: %w", err)
	}
	pb := m.pb
	m.pb = nil
	if err := pb.Close(); err != nil {
		return fmt.Errorf("closing the file: %w", err)
	}
	return nil
}

// free releases everything FFmpeg holds; it is safe after a partial open.
func (m *muxer) free() {
	if m.pkt != nil {
		m.pkt.Free()
		m.pkt = nil
	}
	if m.pb != nil {
		m.pb.Close()
		m.pb = nil
	}
	if m.fc != nil {
		m.fc.Free()
		m.fc = nil
	}
}
