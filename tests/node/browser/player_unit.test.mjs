// Unit tests of web/player.js's wire functions against the shared test
// vectors (testdata/vectors), run by `node --test` from tests/browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  parseVideo,
  parseTelemetry,
  encodeCommand,
  avcCodecString,
  percentile,
  codecName,
  TYPE_COMMAND,
} from '../../../web/player.js';

const vectors = (name) => fileURLToPath(new URL(`../../../testdata/vectors/${name}`, import.meta.url));
const shm = JSON.parse(readFileSync(vectors('shm_vectors.json'), 'utf8'));
const ws = JSON.parse(readFileSync(vectors('ws_vectors.json'), 'utf8'));

const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));

function videoMessage(headerBytes, payload) {
  const m = new Uint8Array(1 + headerBytes.length + payload.length);
  m[0] = ws.video_prefix_byte;
  m.set(headerBytes, 1);
  m.set(payload, 1 + headerBytes.length);
  return m.buffer;
}

test('parseVideo reads every header vector field for field', () => {
  for (const v of shm.headers) {
    const hdr = fromHex(v.hex);
    // The vectors' sizes are up to 4 GiB: give a payload only where it fits.
    if (v.size > 1 << 20) {
      assert.throws(() => parseVideo(videoMessage(hdr, new Uint8Array(3))), /header size 4294967295 != payload 3 bytes/);
      continue;
    }
    const { header, payload, keyframe } = parseVideo(videoMessage(hdr, new Uint8Array(v.size).fill(7)));
    assert.equal(header.frameId, BigInt(v.frame_id));
    assert.equal(header.frameSeq, BigInt(v.frame_seq));
    assert.equal(header.size, v.size);
    assert.equal(header.flags, v.flags);
    assert.equal(header.codec, v.codec);
    assert.equal(header.crc32, v.crc32);
    assert.equal(keyframe, (v.flags & 1) === 1);
    assert.equal(payload.length, v.size);
    assert.equal(payload[0], 7);
  }
});

test('parseVideo reads the 64-bit fields of the extreme vector', () => {
  const v = shm.headers[2];
  const hdr = fromHex(v.hex);
  hdr.set([0, 0, 0, 0], 16); // size 0, so that an empty payload matches
  const { header } = parseVideo(videoMessage(hdr, new Uint8Array(0)));
  assert.equal(header.frameId, 18446744073709551615n);
  assert.equal(header.frameSeq, 9223372036854775808n);
});

test('parseVideo reads the frame of the ring region vector', () => {
  const region = readFileSync(vectors('region_4096_seq3_keyframe.bin'));
  const dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
  const writeLen = Number(dv.getBigUint64(8, true));
  const slot = region.subarray(16, 16 + writeLen);
  const { header, keyframe, payload } = parseVideo(videoMessage(slot.subarray(0, 32), slot.subarray(32)));
  assert.equal(header.size, writeLen - 32);
  assert.equal(payload.length, writeLen - 32);
  assert.ok(keyframe);
  assert.equal(codecName(header.codec), 'h264');
});

test('parseVideo rejects short and mistyped messages', () => {
  assert.throws(() => parseVideo(new Uint8Array(32).buffer), /need at least 33/);
  const m = new Uint8Array(33);
  m[0] = 2;
  assert.throws(() => parseVideo(m.buffer), /not video/);
});

test('parseTelemetry matches the telemetry vector', () => {
  const { subject, payload } = parseTelemetry(fromHex(ws.telemetry.hex).buffer);
  assert.equal(subject, ws.telemetry.subject);
  assert.equal(new TextDecoder().decode(payload), ws.telemetry.payload);
});

test('parseTelemetry rejects bad lengths', () => {
  const over = new Uint8Array(3 + 300);
  over[0] = 2;
  over[1] = 300 & 0xff;
  over[2] = 300 >> 8;
  assert.throws(() => parseTelemetry(over.buffer), /over 256/);
  const short = Uint8Array.from([2, 10, 0, 0x61]);
  assert.throws(() => parseTelemetry(short.buffer), /exceeds message/);
  assert.throws(() => parseTelemetry(Uint8Array.from([2, 0]).buffer), /at least 3 bytes/);
});

test('encodeCommand frames 0x04 JSON', () => {
  const m = encodeCommand('set_cmd_vel', 7, 300, { linear_x: 0.5, linear_y: 0, angular_z: 0 });
  assert.equal(m[0], TYPE_COMMAND);
  const body = JSON.parse(new TextDecoder().decode(m.subarray(1)));
  assert.deepEqual(body, { action: 'set_cmd_vel', cmd_seq: 7, ttl_ms: 300, data: { linear_x: 0.5, linear_y: 0, angular_z: 0 } });
  for (const bad of ['', 'a.b', 'a*', 'x>', 'two words', 5]) {
    assert.throws(() => encodeCommand(bad, 1, 1, {}), /not one NATS token/);
  }
});

test('avcCodecString reads profile, constraints and level from the SPS', () => {
  // AUD, then SPS of Constrained Baseline level 3.0 (42 E0 1E), 4-byte start codes.
  const au = Uint8Array.from([0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1e, 0xab, 0, 0, 1, 0x68, 0xce]);
  assert.equal(avcCodecString(au), 'avc1.42E01E');
  const high = Uint8Array.from([0, 0, 1, 0x27, 0x64, 0x00, 0x28, 0x00]);
  assert.equal(avcCodecString(high), 'avc1.640028');
  assert.equal(avcCodecString(Uint8Array.from([0, 0, 1, 0x65, 0x88, 0x80, 0x40])), null);
});

test('percentile', () => {
  assert.ok(Number.isNaN(percentile([], 0.5)));
  const s = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(s, 0.5), 50);
  assert.equal(percentile(s, 0.95), 95);
  assert.equal(percentile(s, 1), 100);
});

test('recordingURL asks the stream URL for ?recording over http(s)', async () => {
  const { recordingURL } = await import('../../../web/timeline.js');
  assert.equal(recordingURL('ws://127.0.0.1:8080/stream/ws'), 'http://127.0.0.1:8080/stream/ws?recording=');
  assert.equal(recordingURL('wss://edge.example/video/ws?replay=-30s'), 'https://edge.example/video/ws?recording=');
});
