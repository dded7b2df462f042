// check.mjs reads one MCAP file with both reference readers of @mcap/core
// and prints one JSON line describing what they found, for tests/mcap.
//
//   node mcap/check.mjs FILE.mcap
//
// stream:  McapStreamReader (CRCs validated), fed the file in 64 KiB pieces:
//          the count of each record type, the chunks whose CRC is set, each
//          chunk's start and end time beside the smallest and largest log
//          time of the messages in it, and every message in file order.
// indexed: McapIndexedReader over a file handle (summary CRC validated on
//          open, chunk CRCs on read): header, statistics, schemas, channels,
//          chunk indexes, the messages readMessages() yields (in log time
//          order), the data section CRC recomputed here with zlib, and
//          layout checks of the index records against the bytes they point
//          at.
//
// A message is [channelId, sequence, logTime, publishTime, sha256(data)],
// the times as decimal strings. A reader's error ends its part and is
// reported in its "error" field; the exit status is 0 whenever the JSON line
// was printed.
import { createHash } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { crc32 } from "node:zlib";

import { McapIndexedReader, McapStreamReader } from "@mcap/core";

const path = process.argv[2];
if (!path) {
  console.error("usage: node mcap/check.mjs FILE.mcap");
  process.exit(2);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const message = (m) => [m.channelId, m.sequence, String(m.logTime), String(m.publishTime), sha256(m.data)];
const errorText = (e) => (e instanceof Error ? e.message : String(e));

// plain turns BigInts into decimal strings and Maps into objects.
function plain(v) {
  if (typeof v === "bigint") return String(v);
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (v instanceof Uint8Array) return { bytes: v.byteLength, sha256: sha256(v) };
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

async function readStream(bytes) {
  const out = { error: null, records: {}, chunkCrcsSet: 0, chunks: [], messagesOutsideChunks: 0, messages: [] };
  // The reader yields a chunk, then the records inside it; the first record
  // that cannot be inside a chunk (its message indexes, Data End) ends it.
  let chunk = null;
  try {
    const reader = new McapStreamReader({ includeChunks: true, validateCrcs: true });
    const piece = 64 * 1024;
    for (let at = 0; at < bytes.byteLength; at += piece) {
      reader.append(bytes.subarray(at, Math.min(at + piece, bytes.byteLength)));
      for (let r; (r = reader.nextRecord()); ) {
        out.records[r.type] = (out.records[r.type] ?? 0) + 1;
        if (!["Chunk", "Schema", "Channel", "Message", "Unknown"].includes(r.type)) chunk = null;
        if (r.type === "Chunk") {
          if (r.uncompressedCrc !== 0) out.chunkCrcsSet++;
          chunk = { start: String(r.messageStartTime), end: String(r.messageEndTime), min: null, max: null, messages: 0 };
          out.chunks.push(chunk);
        }
        if (r.type === "Message") {
          out.messages.push(message(r));
          if (chunk) {
            chunk.messages++;
            if (chunk.min === null || r.logTime < BigInt(chunk.min)) chunk.min = String(r.logTime);
            if (chunk.max === null || r.logTime > BigInt(chunk.max)) chunk.max = String(r.logTime);
          } else {
            out.messagesOutsideChunks++;
          }
        }
      }
    }
    if (!reader.done()) throw new Error("stream ended before the footer and closing magic");
  } catch (e) {
    out.error = errorText(e);
  }
  return out;
}

// recordAt parses the record header at offset: [opcode, total length].
function recordAt(bytes, offset) {
  const o = Number(offset);
  if (o + 9 > bytes.byteLength) return [undefined, 0];
  const view = new DataView(bytes.buffer, bytes.byteOffset + o, 9);
  return [view.getUint8(0), 9 + Number(view.getBigUint64(1, true))];
}

// layout checks the index records against the bytes they point at.
function layout(bytes, reader) {
  const errors = [];
  for (const [i, ci] of reader.chunkIndexes.entries()) {
    const [op, len] = recordAt(bytes, ci.chunkStartOffset);
    if (op !== 0x06) errors.push(`chunk index ${i}: offset ${ci.chunkStartOffset} holds opcode ${op}, not a chunk`);
    if (BigInt(len) !== ci.chunkLength) errors.push(`chunk index ${i}: chunk_length ${ci.chunkLength}, record is ${len}`);
    const recordsLen = new DataView(bytes.buffer, bytes.byteOffset + Number(ci.chunkStartOffset) + len - 8 - Number(ci.compressedSize), 8);
    if (recordsLen.getBigUint64(0, true) !== ci.compressedSize || ci.compressedSize !== ci.uncompressedSize) {
      errors.push(`chunk index ${i}: sizes ${ci.compressedSize}/${ci.uncompressedSize} do not match the chunk's records`);
    }
    // The message indexes follow the chunk, back to back.
    let at = ci.chunkStartOffset + ci.chunkLength;
    const end = at + ci.messageIndexLength;
    const seen = new Map();
    while (at < end) {
      const [mop, mlen] = recordAt(bytes, at);
      if (mop !== 0x07) {
        errors.push(`chunk index ${i}: opcode ${mop} at ${at} inside its message index range`);
        break;
      }
      seen.set(new DataView(bytes.buffer, bytes.byteOffset + Number(at) + 9, 2).getUint16(0, true), at);
      at += BigInt(mlen);
    }
    if (at !== end) errors.push(`chunk index ${i}: message index records end at ${at}, message_index_length says ${end}`);
    if (seen.size !== ci.messageIndexOffsets.size) {
      errors.push(`chunk index ${i}: ${seen.size} message index records, ${ci.messageIndexOffsets.size} offsets`);
    }
    for (const [channel, offset] of ci.messageIndexOffsets) {
      if (seen.get(channel) !== offset) errors.push(`chunk index ${i}: channel ${channel} index at ${offset}, found at ${seen.get(channel)}`);
    }
  }
  for (const [opcode, so] of reader.summaryOffsetsByOpcode) {
    let at = so.groupStart;
    const end = so.groupStart + so.groupLength;
    while (at < end) {
      const [op, len] = recordAt(bytes, at);
      if (op !== opcode) {
        errors.push(`summary offset ${opcode}: opcode ${op} at ${at}`);
        break;
      }
      at += BigInt(len);
    }
    if (at !== end) errors.push(`summary offset ${opcode}: records end at ${at}, group ends at ${end}`);
  }
  return errors;
}

async function readIndexed(bytes) {
  const out = { error: null };
  const handle = await open(path, "r");
  try {
    const readable = {
      size: async () => BigInt((await handle.stat()).size),
      read: async (offset, size) => {
        const buf = new Uint8Array(Number(size));
        const { bytesRead } = await handle.read(buf, 0, buf.byteLength, Number(offset));
        if (bytesRead !== buf.byteLength) throw new Error(`short read: ${bytesRead} of ${size} bytes at ${offset}`);
        return buf;
      },
    };
    const reader = await McapIndexedReader.Initialize({ readable });
    out.header = plain(reader.header);
    out.footer = plain(reader.footer);
    out.statistics = plain(reader.statistics ?? null);
    out.schemas = [...reader.schemasById.values()].map(plain);
    out.channels = [...reader.channelsById.values()].map(plain);
    out.chunkIndexes = reader.chunkIndexes.map(plain);
    out.summaryOffsets = [...reader.summaryOffsetsByOpcode.keys()];
    out.dataSectionCrc = reader.dataSectionCrc ?? 0;
    out.dataSectionCrcComputed = crc32(bytes.subarray(0, Number(reader.dataEndOffset)));
    out.layoutErrors = layout(bytes, reader);
    out.perChannel = {};
    out.messages = [];
    out.ordered = true;
    let last = -1n;
    for await (const m of reader.readMessages({ validateCrcs: true })) {
      out.perChannel[m.channelId] = (out.perChannel[m.channelId] ?? 0) + 1;
      out.messages.push(message(m));
      if (m.logTime < last) out.ordered = false;
      last = m.logTime;
    }
  } catch (e) {
    out.error = errorText(e);
  } finally {
    await handle.close();
  }
  return out;
}

const bytes = await readFile(path);
const stream = await readStream(bytes);
const indexed = await readIndexed(bytes);
process.stdout.write(JSON.stringify({ size: bytes.byteLength, stream, indexed }) + "\n");
