package mcap

import (
	"encoding/json"
	"fmt"
)

// CompressedVideoSchemaName is the name Foxglove looks for on a video
// channel's schema.
const CompressedVideoSchemaName = "foxglove.CompressedVideo"

// JSONEncoding is the message encoding of JSON channels, and
// JSONSchemaEncoding the schema encoding of a JSON Schema.
const (
	JSONEncoding       = "json"
	JSONSchemaEncoding = "jsonschema"
)

// compressedVideoSchema describes foxglove.CompressedVideo as JSON: a
// timestamp {sec, nsec}, the frame of reference, the frame's bytes as a
// base64 string, and the codec.
const compressedVideoSchema = `{
  "title": "foxglove.CompressedVideo",
  "description": "One frame of a compressed video stream",
  "type": "object",
  "properties": {
    "timestamp": {
      "title": "time",
      "description": "When the frame was captured",
      "type": "object",
      "properties": {
        "sec": {"type": "integer", "minimum": 0},
        "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}
      }
    },
    "frame_id": {
      "type": "string",
      "description": "Frame of reference of the camera"
    },
    "data": {
      "type": "string",
      "contentEncoding": "base64",
      "description": "The frame's bytes; for h264, Annex B NAL units that decode to exactly one picture, with SPS and PPS before each keyframe"
    },
    "format": {
      "type": "string",
      "description": "Codec of data: h264, h265, vp9 or av1"
    }
  }
}`

// CompressedVideoSchema returns the JSON Schema of foxglove.CompressedVideo,
// for AddSchema with encoding JSONSchemaEncoding.
func CompressedVideoSchema() []byte { return []byte(compressedVideoSchema) }

// AddCompressedVideoChannel adds the foxglove.CompressedVideo schema (once
// per writer) and a json channel on topic that uses it. Write its messages
// with MarshalCompressedVideo.
func (w *Writer) AddCompressedVideoChannel(topic string, metadata map[string]string) (uint16, error) {
	if w.videoSchema == 0 {
		id, err := w.AddSchema(CompressedVideoSchemaName, JSONSchemaEncoding, CompressedVideoSchema())
		if err != nil {
			return 0, err
		}
		w.videoSchema = id
	}
	return w.AddChannel(w.videoSchema, topic, JSONEncoding, metadata)
}

// AddJSONChannel adds a channel on topic whose messages are JSON objects,
// without a schema (schema id 0): the specification makes the schema
// optional for json, and Foxglove and the reference readers read such
// channels.
func (w *Writer) AddJSONChannel(topic string, metadata map[string]string) (uint16, error) {
	return w.AddChannel(0, topic, JSONEncoding, metadata)
}

// foxgloveTime is the {sec, nsec} time of Foxglove's schemas.
type foxgloveTime struct {
	Sec  uint64 `json:"sec"`
	Nsec uint32 `json:"nsec"`
}

type compressedVideo struct {
	Timestamp foxgloveTime `json:"timestamp"`
	FrameID   string       `json:"frame_id"`
	Data      []byte       `json:"data"` // encoding/json writes []byte as standard base64
	Format    string       `json:"format"`
}

// MarshalCompressedVideo encodes one video frame as a foxglove.CompressedVideo
// JSON message: timestampNs (nanoseconds since the Unix epoch, usually the
// message's log time) split into sec and nsec, frameID, data in base64,
// format ("h264" for Annex B H.264).
func MarshalCompressedVideo(timestampNs uint64, frameID, format string, data []byte) ([]byte, error) {
	if data == nil {
		data = []byte{}
	}
	b, err := json.Marshal(compressedVideo{
		Timestamp: foxgloveTime{Sec: timestampNs / 1e9, Nsec: uint32(timestampNs % 1e9)},
		FrameID:   frameID,
		Data:      data,
		Format:    format,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding %s frame of %d bytes: %w", format, len(data), err)
	}
	return b, nil
}
