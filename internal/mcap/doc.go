// Package mcap writes MCAP files (https://mcap.dev/spec), the container
// format Foxglove and the ROS 2 tooling read, for exporting flight-recorder
// recordings. It is a streaming writer to a plain io.Writer: nothing is
// seeked, every offset is counted as bytes go out. It imports nothing from
// Caddy.
//
// # MCAP layout
//
// A file written by Writer is, in order:
//
//   - the magic (0x89 "MCAP0" CR LF) and a Header record (the profile from
//     Options, library "sdr-caddy");
//   - the data section: a Schema record and a Channel record each time one
//     is added (outside chunks, so always before the first message that uses
//     it), and the messages in Chunk records. Chunks are uncompressed
//     (compression ""), carry the CRC32 of their records, and close once
//     their records reach Options.ChunkSize (default 1 MiB); a message larger
//     than that gets a chunk of its own. Each chunk's start and end times are
//     the smallest and largest log time in it, so log times need not grow.
//     After each chunk come its Message Index records, one per channel with
//     messages in the chunk, sorted by channel id, their entries sorted by
//     log time;
//   - a Data End record holding the CRC32 of every byte before it, from the
//     leading magic on;
//   - the summary section, grouped by opcode: every Schema, every Channel, one
//     Statistics record (message, schema, channel and chunk counts, zero
//     attachments and metadata, first and last log time, messages per
//     channel), and a Chunk Index per chunk (offsets of the chunk and of its
//     message indexes, their lengths, the chunk's times and sizes);
//   - a Summary Offset record per summary group;
//   - the Footer (summary start, summary offset start, and the CRC32 of the
//     summary and summary offset sections plus the footer's first fields),
//     then the magic again.
//
// An empty recording is still a complete file: header, Data End, a summary
// with its Statistics record (all zero), the footer.
//
// Schema ids and channel ids count from 1. Schema id 0 in a channel means
// "no schema", which the specification allows for self-describing message
// encodings such as json.
//
// # Channels of a recording
//
// Video frames use the foxglove.CompressedVideo schema (schema encoding
// jsonschema, message encoding json, see CompressedVideoSchema and
// MarshalCompressedVideo): one message per access unit, Annex B H.264 bytes
// in the base64 field data, format "h264": the schema Foxglove's image panel
// plays.
//
// Telemetry, commands and gate events are JSON objects on channels with
// message encoding json and schema id 0 (AddJSONChannel). The specification
// lists the schema as optional for json because JSON describes itself, and
// both reference readers accept such channels; a schema would only restate
// fields whose shape the robot, not this writer, decides.
package mcap
