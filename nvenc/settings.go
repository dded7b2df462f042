package nvenc

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/sdr-os/sdr-caddy/frame"
)

// ParseSettings reads the body of a command.genesis.settings message
// (docs/protocol.md, "NATS subjects": codec, jpeg_quality, stream_fps, camera_res,
// h264_bitrate, h264_preset). Keys the encoder does not act on (camera_res
// is the simulator's) and unknown keys are ignored; a known key with a value
// of the wrong kind is an error.
//
//	codec         "h264", "hevc"/"h265", "jpeg"/"mjpeg", or 1, 2, 3
//	jpeg_quality  1..100
//	stream_fps    frames per second (rate control)
//	h264_bitrate  bit/s when >= 100000, else kbit/s; or a string "4M", "2500k"
//	h264_preset   p1..p7 or an x264 preset name
func ParseSettings(body []byte) (Settings, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return Settings{}, fmt.Errorf("parsing settings: %w", err)
	}
	// The command envelope may wrap the settings in "data".
	if d, ok := raw["data"]; ok {
		var inner map[string]json.RawMessage
		if json.Unmarshal(d, &inner) == nil {
			raw = inner
		}
	}
	var st Settings
	if v, ok := raw["codec"]; ok {
		c, err := parseCodec(v)
		if err != nil {
			return Settings{}, err
		}
		st.Codec = &c
	}
	intField := func(key string) (*int, error) {
		v, ok := raw[key]
		if !ok {
			return nil, nil
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, fmt.Errorf("parsing settings: %s is %s, want a number", key, v)
			}
			if f, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
				return nil, fmt.Errorf("parsing settings: %s is %q, want a number", key, s)
			}
		}
		n := int(f)
		return &n, nil
	}
	var err error
	if st.JPEGQuality, err = intField("jpeg_quality"); err != nil {
		return Settings{}, err
	}
	if st.FPS, err = intField("stream_fps"); err != nil {
		return Settings{}, err
	}
	if v, ok := raw["h264_bitrate"]; ok {
		k, err := parseBitrate(v)
		if err != nil {
			return Settings{}, err
		}
		st.BitrateKbps = &k
	}
	if v, ok := raw["h264_preset"]; ok {
		var p string
		if err := json.Unmarshal(v, &p); err != nil {
			return Settings{}, fmt.Errorf("parsing settings: h264_preset is %s, want a string", v)
		}
		st.Preset = &p
	}
	return st, nil
}

func parseCodec(v json.RawMessage) (frame.Codec, error) {
	var n int
	if json.Unmarshal(v, &n) == nil {
		switch c := frame.Codec(n); c {
		case frame.CodecH264, frame.CodecHEVC, frame.CodecJPEG:
			return c, nil
		}
		return 0, fmt.Errorf("parsing settings: codec %d, want 1 (h264), 2 (hevc) or 3 (jpeg)", n)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("parsing settings: codec is %s, want a string or a number", v)
	}
	return ParseCodec(s)
}

// ParseCodec names an encoded codec: h264 (avc), hevc (h265), jpeg (mjpeg).
func ParseCodec(s string) (frame.Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "h264", "avc", "h.264":
		return frame.CodecH264, nil
	case "hevc", "h265", "h.265":
		return frame.CodecHEVC, nil
	case "jpeg", "mjpeg", "jpg":
		return frame.CodecJPEG, nil
	}
	return 0, fmt.Errorf("codec %q: want h264, hevc or jpeg", s)
}

func parseBitrate(v json.RawMessage) (int, error) {
	var f float64
	if json.Unmarshal(v, &f) == nil {
		if f >= 100000 {
			return int(f / 1000), nil
		}
		return int(f), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("parsing settings: h264_bitrate is %s, want a number or a string like \"4M\"", v)
	}
	s = strings.ToLower(strings.TrimSpace(s))
	mul := 0.001
	switch {
	case strings.HasSuffix(s, "m"):
		mul, s = 1000, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "k"):
		mul, s = 1, strings.TrimSuffix(s, "k")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("parsing settings: h264_bitrate %q, want a number or a string like \"4M\"", s)
	}
	if mul == 0.001 && f < 100000 {
		mul = 1
	}
	return int(f * mul), nil
}
