package stream

import "github.com/sdr-os/sdr-caddy/shmring"

// inspectionJSON is what `caddy sdr-ring inspect --json` prints: the
// inspection with every name in snake_case, as the rest of sdr-caddy's
// JSON, and codecs by name.
type inspectionJSON struct {
	Path       string         `json:"path"`
	Size       int64          `json:"size"`
	Inode      uint64         `json:"inode"`
	Sequence   uint64         `json:"sequence"`
	WriteLen   uint64         `json:"write_len"`
	Header     headerJSON     `json:"header"`
	PayloadCRC uint32         `json:"payload_crc"`
	Verified   bool           `json:"verified"`
	Problem    string         `json:"problem,omitempty"`
	FrameAgeNS int64          `json:"frame_age_ns,omitempty"`
	Raw        *rawLayoutJSON `json:"raw,omitempty"`
}

// headerJSON is a frame header.
type headerJSON struct {
	FrameID  uint64 `json:"frame_id"`
	FrameSeq uint64 `json:"frame_seq"`
	Size     uint32 `json:"size"`
	Flags    uint16 `json:"flags"`
	Keyframe bool   `json:"keyframe"`
	Codec    string `json:"codec"`
	CRC32    uint32 `json:"crc32"`
	Reserved uint32 `json:"reserved"`
}

// rawLayoutJSON is the layout of a raw frame.
type rawLayoutJSON struct {
	Codec       string      `json:"codec"`
	Width       uint32      `json:"width"`
	Height      uint32      `json:"height"`
	Stride      uint32      `json:"stride"`
	Planes      []planeJSON `json:"planes"`
	PayloadSize int         `json:"payload_size"`
}

// planeJSON is one plane of a raw frame.
type planeJSON struct {
	Offset int `json:"offset"`
	Stride int `json:"stride"`
	Rows   int `json:"rows"`
}

func inspectionView(in shmring.Inspection) inspectionJSON {
	h := in.Header
	v := inspectionJSON{
		Path: in.Path, Size: in.Size, Inode: in.Inode, Sequence: in.Sequence, WriteLen: in.WriteLen,
		Header: headerJSON{
			FrameID: h.FrameID, FrameSeq: h.FrameSeq, Size: h.Size, Flags: h.Flags, Keyframe: h.Keyframe(),
			Codec: h.Codec.String(), CRC32: h.CRC32, Reserved: h.Reserved,
		},
		PayloadCRC: in.PayloadCRC, Verified: in.Verified, Problem: in.Problem, FrameAgeNS: int64(in.FrameAge),
	}
	if r := in.Raw; r != nil {
		v.Raw = &rawLayoutJSON{Codec: r.Codec.String(), Width: r.Descriptor.Width, Height: r.Descriptor.Height,
			Stride: r.Descriptor.Stride, PayloadSize: r.PayloadSize, Planes: make([]planeJSON, 0, len(r.Planes))}
		for _, p := range r.Planes {
			v.Raw.Planes = append(v.Raw.Planes, planeJSON{Offset: p.Offset, Stride: p.Stride, Rows: p.Rows})
		}
	}
	return v
}
