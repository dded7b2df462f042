// sdr-caddy browser player: an ES module with no build step.
//
//   import { Player } from '/sdr/player.js';
//   const player = new Player(document.getElementById('video'));
//   player.start();
//
// It speaks the /stream/ws protocol (docs/player.md, docs/protocol.md):
// 0x01 VIDEO (32-byte ring header + access unit) is decoded with WebCodecs
// (H.264 with optimizeForLatency, keyframe gating, deltas dropped while the
// decoder lags) or createImageBitmap (JPEG) and drawn to a canvas; 0x02
// TELEMETRY is parsed and dispatched as events; 0x04 COMMAND is sent by
// command(). The overlay shows fps, bitrate, decode queue, drops and frame
// age, a video-lost banner and the safety gate state.

export const TYPE_VIDEO = 0x01;
export const TYPE_TELEMETRY = 0x02;
export const TYPE_SIGNALING = 0x03;
export const TYPE_COMMAND = 0x04;

export const HEADER_SIZE = 32;
export const FLAG_KEYFRAME = 0x0001;
export const MAX_SUBJECT_LEN = 256;

/** Codec values of the frame header. */
export const Codec = Object.freeze({ H264: 1, HEVC: 2, JPEG: 3 });

const CODEC_NAMES = { 1: 'h264', 2: 'hevc', 3: 'jpeg' };

/** codecName names a header codec value the way the overlay shows it. */
export function codecName(c) {
  return CODEC_NAMES[c] || (c >= 16 && c <= 31 ? `raw(${c})` : `codec(${c})`);
}

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/**
 * parseVideo splits a 0x01 VIDEO message into its header and payload.
 * The payload is a view into buf, not a copy.
 * @param {ArrayBuffer} buf
 */
export function parseVideo(buf) {
  if (buf.byteLength < 1 + HEADER_SIZE) {
    throw new Error(`video message of ${buf.byteLength} bytes, need at least ${1 + HEADER_SIZE}`);
  }
  const dv = new DataView(buf, 1, HEADER_SIZE);
  if (new Uint8Array(buf, 0, 1)[0] !== TYPE_VIDEO) {
    throw new Error(`message type 0x${new Uint8Array(buf, 0, 1)[0].toString(16)} is not video`);
  }
  const header = {
    frameId: dv.getBigUint64(0, true),
    frameSeq: dv.getBigUint64(8, true),
    size: dv.getUint32(16, true),
    flags: dv.getUint16(20, true),
    codec: dv.getUint16(22, true),
    crc32: dv.getUint32(24, true),
  };
  const payload = new Uint8Array(buf, 1 + HEADER_SIZE);
  if (header.size !== payload.byteLength) {
    throw new Error(`video frame ${header.frameSeq}: header size ${header.size} != payload ${payload.byteLength} bytes`);
  }
  return { header, payload, keyframe: (header.flags & FLAG_KEYFRAME) !== 0 };
}

/**
 * parseTelemetry splits a 0x02 TELEMETRY message into subject and payload
 * bytes (a view into buf).
 * @param {ArrayBuffer} buf
 */
export function parseTelemetry(buf) {
  const b = new Uint8Array(buf);
  if (b.length < 3 || b[0] !== TYPE_TELEMETRY) {
    throw new Error(`not a 0x02 message of at least 3 bytes (${b.length} bytes)`);
  }
  const n = b[1] | (b[2] << 8);
  if (n > MAX_SUBJECT_LEN) throw new Error(`telemetry subject length ${n} over ${MAX_SUBJECT_LEN}`);
  if (b.length < 3 + n) throw new Error(`telemetry subject length ${n} exceeds message (${b.length} bytes)`);
  return { subject: textDecoder.decode(b.subarray(3, 3 + n)), payload: b.subarray(3 + n) };
}

/** encodeCommand builds a 0x04 COMMAND message. */
export function encodeCommand(action, cmdSeq, ttlMs, data) {
  validAction(action);
  const json = JSON.stringify({ action, cmd_seq: cmdSeq, ttl_ms: ttlMs, data: data ?? {} });
  const body = textEncoder.encode(json);
  const msg = new Uint8Array(1 + body.length);
  msg[0] = TYPE_COMMAND;
  msg.set(body, 1);
  return msg;
}

// An action is one NATS token; the server accepts [A-Za-z0-9_-]{1,64}.
function validAction(action) {
  if (typeof action !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(action)) {
    throw new Error(`command action ${JSON.stringify(action)} is not one NATS token of [A-Za-z0-9_-]{1,64}`);
  }
}

/**
 * avcCodecString reads the SPS of an Annex-B access unit and returns the
 * WebCodecs codec string (avc1.PPCCLL), or null when there is no SPS.
 * @param {Uint8Array} au
 */
export function avcCodecString(au) {
  for (let i = 0; i + 5 < au.length; i++) {
    if (au[i] === 0 && au[i + 1] === 0 && au[i + 2] === 1) {
      if ((au[i + 3] & 0x1f) === 7) {
        return 'avc1.' + hex2(au[i + 4]) + hex2(au[i + 5]) + hex2(au[i + 6] ?? 0);
      }
      i += 2;
    }
  }
  return null;
}

function hex2(v) {
  return v.toString(16).padStart(2, '0').toUpperCase();
}

// A generic HEVC Main profile string; browsers without an HEVC decoder say so.
const HEVC_CODEC = 'hev1.1.6.L153.B0';

/** percentile of a sorted array, q in [0,1]. */
export function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function nowMs() {
  return performance.timeOrigin + performance.now();
}

// frame_id is the commit time in Unix ns when the writer stamps it; any
// value more than an hour away from now is taken as an application id.
function stampMs(frameId) {
  const ms = Number(frameId / 1000n) / 1000;
  return Math.abs(ms - Date.now()) < 3600e3 ? ms : null;
}

const DEFAULTS = {
  url: null, // a path on this origin or a ws(s):// URL; default /stream/ws
  overlay: true,
  videoLostMs: 0, // 0: max(500 ms, 4 frame intervals)
  // The decoder lags when its oldest undecoded frame is older than
  // maxDecodeLagMs or more than maxDecodeQueue frames wait in it: deltas are
  // then dropped until the next keyframe. A joining client gets the current
  // GOP in one burst (up to a GOP of frames at once); these limits let a
  // software decoder work through it instead of dropping it.
  maxDecodeLagMs: 500,
  maxDecodeQueue: 120,
  maxJpegInFlight: 2,
  // After a frame_seq gap, decode nothing until a keyframe (a frozen picture
  // instead of a smeared one). Off by default, as the old service's gating:
  // an intra-refresh encoder heals the picture without keyframes.
  awaitKeyOnGap: false,
  reconnectMinMs: 250,
  reconnectMaxMs: 5000,
  ttlMs: 1000, // ttl_ms of commands other than driving
  ageSamples: 4096, // frame ages kept for stats (ring)
};

/**
 * Player connects to /stream/ws, decodes the video into a canvas inside
 * container, and dispatches events:
 *   'telemetry' {subject, payload (Uint8Array), text, json, at}
 *   'ack'       {action, cmd_seq, status, detail, rejected}
 *   'safety'    {gate, sim}
 *   'control'   {stream, you, held, holder, mine}  the control lease, when the server has one
 *   'state'     {state}   connecting | live | reconnecting | stopped, and in
 *                         replay paused | ended
 *   'replay'    {replay}  the replay ({from, speed}) or null when live, after
 *                         replayAt, pause, resume and live
 *   'frame'     {frameSeq, ageMs, width, height, codec}  after each drawn frame
 */
export class Player extends EventTarget {
  /**
   * @param {HTMLElement} container element the canvas and overlay go into
   * @param {object} [options] see DEFAULTS
   */
  constructor(container, options = {}) {
    super();
    this.opts = { ...DEFAULTS, ...options };
    for (const k of Object.keys(options)) {
      if (!(k in DEFAULTS)) throw new Error(`unknown Player option ${JSON.stringify(k)}`);
    }
    this.url = wsURL(this.opts.url || '/stream/ws');
    this.container = container;
    ensureStylesheet();
    container.classList.add('sdr-player');
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'sdr-canvas';
    this.canvas.width = 640;
    this.canvas.height = 360;
    this.ctx2d = this.canvas.getContext('2d', { alpha: false });
    this.ctx2d.fillStyle = '#000';
    this.ctx2d.fillRect(0, 0, this.canvas.width, this.canvas.height);
    container.appendChild(this.canvas);
    this.banner = el('div', 'sdr-banner', 'CONNECTING');
    container.appendChild(this.banner);
    this.overlayEl = null;
    if (this.opts.overlay) {
      this.overlayEl = el('div', 'sdr-overlay', '');
      container.appendChild(this.overlayEl);
      this.safetyEl = el('div', 'sdr-safety', 'gate —');
      this.safetyEl.title = 'video safety gate (telemetry.safety.video_gate) · simulator safety state (telemetry.safety.state)';
      container.appendChild(this.safetyEl);
      this.controlEl = el('div', 'sdr-control', '');
      this.controlEl.title = 'control lease (telemetry.control.lease): who may drive';
      this.controlEl.hidden = true;
      container.appendChild(this.controlEl);
    }

    this.ws = null;
    this.state = 'stopped';
    // The replay (?replay=<from>&speed=<x>, needs the sdr_recorder app), or
    // null when live: from is where the open connection started, openedAt
    // when its first frame came.
    this.replay = null;
    if (this.overlayEl) {
      this.modeEl = el('div', 'sdr-mode', 'REPLAY');
      this.modeEl.title = 'playing the flight recording: commands are off';
      this.modeEl.hidden = true;
      container.appendChild(this.modeEl);
    }
    this.attempt = 0;
    this.reconnectTimer = 0;
    this.tickTimer = 0;
    this.cmdSeq = 0;
    this.safety = { gate: null, sim: null };
    // The control lease, once the server says it has one (its first message
    // on telemetry.control.lease names this connection: "you").
    this.control = null;
    this.telemetry = new Map(); // subject -> latest event detail

    this.decoder = null;
    this.decoderCodec = '';
    this.awaitKey = true;
    this.pending = new Map(); // chunk timestamp -> {frameSeq, stamp, submitted}
    this.nextTimestamp = 0;
    this.jpegInFlight = 0;
    this.lastDrawnSeq = -1n;
    this.lastSeq = null;
    this.ages = new Float64Array(this.opts.ageSamples);
    this.agesN = 0;

    this.stats = {
      state: 'stopped',
      url: this.url,
      connects: 0,
      messages: 0,
      framesReceived: 0,
      framesDecoded: 0,
      keyframes: 0,
      bytesReceived: 0,
      telemetryReceived: 0,
      dropped: 0, // frames the player did not decode: keyframe gating, decoder backlog, JPEG backlog
      missed: 0, // frame_seq gaps: frames the server skipped for this client
      lastGapAt: 0, // nowMs() of the latest gap
      recentGaps: [], // nowMs() of the latest 16 gaps
      recentKeys: [], // nowMs() of the latest 16 keyframes received
      decodeErrors: 0,
      protocolErrors: 0,
      lastError: '',
      codec: '',
      width: 0,
      height: 0,
      fps: 0,
      bitrateBps: 0,
      decodeQueue: 0,
      ageMs: NaN,
      ageP50Ms: NaN,
      ageP95Ms: NaN,
      videoLost: true,
      lastFrameAt: 0, // nowMs() of the last video message
      connectStartedAt: 0,
      openedAt: 0,
      firstFrameMs: NaN, // from the start of the latest connection to its first drawn frame
      firstVideoMs: NaN, // from the start of the latest connection to its first video message
      drawMs: 0, // smoothed time of one drawImage
    };
    this.window = { at: nowMs(), decoded: 0, bytes: 0, ages: [] };
    this.intervalMs = 0; // smoothed interval between video messages
  }

  /** start connects and keeps reconnecting until stop. */
  start() {
    if (this.state !== 'stopped') return;
    this.setState('connecting');
    this.tickTimer = setInterval(() => this.tick(), 100);
    this.connect();
  }

  /** stop closes the connection and the decoder. */
  stop() {
    clearTimeout(this.reconnectTimer);
    clearInterval(this.tickTimer);
    this.closeSocket();
    this.resetDecoder();
    this.setState('stopped');
  }

  closeSocket() {
    clearTimeout(this.reconnectTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
  }

  /**
   * replayAt plays the flight recording from the moment from (a Date) at
   * speed (0.25 to 4): it reopens the connection with ?replay=&speed=.
   * With o.kept, it plays that kept window (&kept=<name>) instead of the
   * recording. Commands are not sent while replaying.
   * @param {Date|number|string} from
   * @param {number} [speed]
   * @param {{kept?: string}} [o]
   */
  replayAt(from, speed = this.replay ? this.replay.speed : 1, o = {}) {
    this.closeSocket();
    this.replay = { from: new Date(from), speed, kept: o.kept || null, openedAt: 0, paused: false };
    this.emitReplay();
    this.setState('connecting');
    this.connect();
  }

  /** position returns the replay's current recorded time, or null when live. */
  position() {
    const r = this.replay;
    if (!r) return null;
    if (r.paused || !r.openedAt) return r.from;
    return new Date(r.from.getTime() + (nowMs() - r.openedAt) * r.speed);
  }

  /** pause closes the replay's connection and keeps its position. */
  pause() {
    const r = this.replay;
    if (!r || r.paused) return;
    r.from = this.position();
    r.paused = true;
    r.openedAt = 0;
    this.closeSocket();
    this.setState('paused');
    this.emitReplay();
  }

  /** resume reopens the replay where it was paused (or ended). */
  resume() {
    if (this.replay) this.replayAt(this.position(), this.replay.speed, { kept: this.replay.kept });
  }

  /** setSpeed changes the replay's speed from its current position. */
  setSpeed(speed) {
    if (!this.replay) return;
    if (this.replay.paused) {
      this.replay.speed = speed;
      this.emitReplay();
      return;
    }
    this.replayAt(this.position(), speed, { kept: this.replay.kept });
  }

  /** live leaves the replay: the connection is reopened live. */
  live() {
    if (!this.replay) return;
    this.replay = null;
    this.closeSocket();
    this.emitReplay();
    this.setState('connecting');
    this.connect();
  }

  emitReplay() {
    const r = this.replay;
    this.dispatchEvent(new CustomEvent('replay', { detail: { replay: r && { from: r.from, speed: r.speed, paused: r.paused, kept: r.kept } } }));
  }

  // connectURL is the URL of the next connection: the stream's, with
  // replay and speed when replaying.
  connectURL() {
    if (!this.replay) return this.url;
    const u = new URL(this.url);
    u.searchParams.set('replay', this.replay.from.toISOString());
    u.searchParams.set('speed', String(this.replay.speed));
    if (this.replay.kept) u.searchParams.set('kept', this.replay.kept);
    return u.href;
  }

  /**
   * command sends a 0x04 COMMAND and returns its cmd_seq, or 0 when not
   * connected.
   * @param {string} action one NATS token: estop, pause, set_cmd_vel, ...
   * @param {object} [data]
   * @param {{ttlMs?: number}} [o]
   */
  command(action, data = {}, o = {}) {
    validAction(action);
    if (this.replay) return 0; // a replay connection takes no commands
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return 0;
    const seq = ++this.cmdSeq;
    this.ws.send(encodeCommand(action, seq, o.ttlMs ?? this.opts.ttlMs, data));
    return seq;
  }

  /** takeControl asks for the control lease; releaseControl gives it back. */
  takeControl() {
    return this.command('take_control');
  }

  releaseControl() {
    return this.command('release_control');
  }

  /** frameAges returns the recorded frame ages in ms, oldest first. */
  frameAges() {
    const n = Math.min(this.agesN, this.ages.length);
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.ages[(this.agesN - n + i) % this.ages.length];
    return out;
  }

  // --- connection ----------------------------------------------------------

  connect() {
    this.stats.connectStartedAt = nowMs();
    this.stats.firstFrameMs = NaN;
    this.stats.firstVideoMs = NaN;
    let ws;
    const url = this.connectURL();
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.fail(`connecting to ${url}: ${e.message}`);
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.stats.connects++;
      this.stats.openedAt = nowMs();
      this.lastSeq = null;
      this.resetDecoder();
      this.setControl(null); // a new connection has a new id, told in its first message
      if (this.replay) this.replay.openedAt = nowMs();
      this.setState('live');
    };
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code !== 1000 && ev.code !== 1005) this.stats.lastError = `connection closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`;
      const r = this.replay;
      if (r) {
        const opened = r.openedAt !== 0;
        r.from = this.position();
        r.openedAt = 0;
        if (opened && ev.code !== 1000 && ev.code !== 1005) {
          this.scheduleReconnect(); // a reload or a failure: go on from here
          return;
        }
        // The end of the recording, or a refusal before the upgrade: stay
        // there rather than replay it again.
        if (!opened) this.stats.lastError = `replay refused or unreachable: ${url}`;
        r.paused = true;
        this.setState('ended');
        this.emitReplay();
        return;
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => {}; // onclose follows with the code
  }

  scheduleReconnect() {
    if (this.state === 'stopped') return;
    const base = Math.min(this.opts.reconnectMaxMs, this.opts.reconnectMinMs * 2 ** this.attempt);
    const delay = base * (0.75 + 0.5 * Math.random());
    this.attempt++;
    this.reconnectAt = nowMs() + delay;
    this.setState('reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.setState('connecting');
      this.connect();
    }, delay);
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.stats.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: { state: s } }));
    this.tick();
  }

  fail(msg) {
    this.stats.lastError = msg;
    console.warn('sdr player:', msg);
  }

  onMessage(data) {
    if (!(data instanceof ArrayBuffer) || data.byteLength === 0) {
      this.stats.protocolErrors++;
      return;
    }
    this.stats.messages++;
    this.attempt = 0;
    const type = new Uint8Array(data, 0, 1)[0];
    try {
      if (type === TYPE_VIDEO) this.onVideo(data);
      else if (type === TYPE_TELEMETRY) this.onTelemetry(data);
      // 0x03 SIGNALING (WebRTC upgrade) is not used by this player.
    } catch (e) {
      this.stats.protocolErrors++;
      this.fail(e.message);
    }
  }

  // --- telemetry -----------------------------------------------------------

  onTelemetry(data) {
    const { subject, payload } = parseTelemetry(data);
    this.stats.telemetryReceived++;
    const text = textDecoder.decode(payload);
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const detail = { subject, payload, text, json, at: Date.now() };
    this.telemetry.set(subject, detail);
    this.dispatchEvent(new CustomEvent('telemetry', { detail }));
    if (subject === 'telemetry.safety.video_gate' && json && typeof json === 'object') {
      this.safety.gate = json.gated ? String(json.mode || 'GATED') : 'ARMED';
      this.safety.gateStaleMs = json.stale_ms;
      this.dispatchEvent(new CustomEvent('safety', { detail: { ...this.safety } }));
    } else if (subject === 'telemetry.safety.state') {
      this.safety.sim = summarizeState(json, text);
      this.dispatchEvent(new CustomEvent('safety', { detail: { ...this.safety } }));
    } else if (subject === 'telemetry.control.lease' && json && typeof json === 'object') {
      // The first names this connection ("you"); later ones are changes.
      const base = typeof json.you === 'string' ? { stream: json.stream, you: json.you } : this.control;
      if (base && json.stream === base.stream) {
        this.setControl({ ...base, held: !!json.held, holder: json.held ? String(json.holder) : '' });
      }
    } else if (subject === 'telemetry.command.ack' && json && typeof json === 'object') {
      const ok = ['ok', 'accepted', 'published', 'applied', 'success', 'done'].includes(String(json.status).toLowerCase());
      this.dispatchEvent(new CustomEvent('ack', { detail: { ...json, rejected: !ok } }));
    }
  }

  setControl(c) {
    this.control = c && { ...c, mine: !!c.held && c.holder === c.you };
    this.dispatchEvent(new CustomEvent('control', { detail: this.control ? { ...this.control } : null }));
  }

  // --- video ---------------------------------------------------------------

  onVideo(data) {
    const { header, payload, keyframe } = parseVideo(data);
    const t = nowMs();
    const st = this.stats;
    if (st.lastFrameAt) {
      const dt = t - st.lastFrameAt;
      if (dt < 10000) this.intervalMs = this.intervalMs ? this.intervalMs * 0.9 + dt * 0.1 : dt;
    }
    st.lastFrameAt = t;
    if (Number.isNaN(st.firstVideoMs)) st.firstVideoMs = t - st.connectStartedAt;
    st.framesReceived++;
    st.bytesReceived += data.byteLength;
    this.window.bytes += data.byteLength;
    if (keyframe) {
      st.keyframes++;
      st.recentKeys.push(t);
      if (st.recentKeys.length > 16) st.recentKeys.shift();
    }
    if (this.lastSeq !== null) {
      if (header.frameSeq > this.lastSeq + 1n) {
        st.missed += Number(header.frameSeq - this.lastSeq - 1n);
        st.lastGapAt = t;
        st.recentGaps.push(t);
        if (st.recentGaps.length > 16) st.recentGaps.shift();
        // Deltas after a gap reference frames this page never got.
        if (this.opts.awaitKeyOnGap) this.awaitKey = true;
      }
      else if (header.frameSeq <= this.lastSeq) this.resetDecoder(); // writer restarted
    }
    this.lastSeq = header.frameSeq;
    const name = codecName(header.codec);
    if (name !== st.codec) {
      st.codec = name;
      this.resetDecoder();
    }
    const meta = { frameSeq: header.frameSeq, stamp: stampMs(header.frameId), received: t };
    switch (header.codec) {
      case Codec.H264:
      case Codec.HEVC:
        this.decodeVideo(header, payload, keyframe, meta);
        break;
      case Codec.JPEG:
        this.decodeJpeg(payload, meta);
        break;
      default:
        st.dropped++;
        if (st.lastError.indexOf('unsupported codec') < 0) this.fail(`unsupported codec ${name} on frame ${header.frameSeq}`);
    }
  }

  decodeVideo(header, payload, keyframe, meta) {
    const st = this.stats;
    if (typeof VideoDecoder === 'undefined') {
      st.dropped++;
      this.bannerText = `CANNOT DECODE ${codecName(header.codec).toUpperCase()}: NO WEBCODECS`;
      if (!this.noWebCodecs) {
        this.noWebCodecs = true;
        st.decodeErrors++;
        this.fail(
          typeof isSecureContext !== 'undefined' && !isSecureContext
            ? `${codecName(header.codec)} needs WebCodecs, which browsers offer only to HTTPS or localhost pages; open this page over HTTPS, or switch the stream to JPEG`
            : `${codecName(header.codec)} needs WebCodecs (VideoDecoder), which this browser lacks; switch the stream to JPEG`,
        );
      }
      return;
    }
    if (!keyframe) {
      if (this.awaitKey) {
        st.dropped++;
        return;
      }
      if (this.backlogged(meta.received)) {
        // The decoder is not keeping up: everything up to the next keyframe goes.
        this.awaitKey = true;
        st.dropped++;
        return;
      }
    } else {
      const codec = header.codec === Codec.H264 ? avcCodecString(payload) : HEVC_CODEC;
      if (!codec) {
        this.fail(`keyframe ${header.frameSeq} has no SPS`);
        st.dropped++;
        return;
      }
      if (this.backlogged(meta.received) || !this.decoder || this.decoder.state === 'closed') {
        this.resetDecoder();
      }
      if (!this.decoder) this.decoder = this.newDecoder();
      if (codec !== this.decoderCodec || this.decoder.state !== 'configured') {
        try {
          this.decoder.configure({ codec, optimizeForLatency: true, hardwareAcceleration: 'no-preference' });
        } catch (e) {
          this.fail(`configuring ${codec}: ${e.message}`);
          st.decodeErrors++;
          this.resetDecoder();
          return;
        }
        this.decoderCodec = codec;
      }
      this.awaitKey = false;
    }
    const ts = this.nextTimestamp++;
    meta.submitted = nowMs();
    this.pending.set(ts, meta);
    try {
      this.decoder.decode(new EncodedVideoChunk({ type: keyframe ? 'key' : 'delta', timestamp: ts, data: payload }));
    } catch (e) {
      this.pending.delete(ts);
      st.decodeErrors++;
      this.fail(`decoding frame ${header.frameSeq}: ${e.message}`);
      this.resetDecoder();
    }
  }

  backlogged(now) {
    if (!this.decoder || this.pending.size === 0) return false;
    if (this.decoder.decodeQueueSize > this.opts.maxDecodeQueue) return true;
    const oldest = this.pending.values().next().value;
    return now - oldest.submitted > this.opts.maxDecodeLagMs;
  }

  newDecoder() {
    const dec = new VideoDecoder({
      output: (frame) => this.onDecoded(dec, frame),
      error: (e) => {
        if (this.decoder !== dec) return;
        this.stats.decodeErrors++;
        this.fail(`video decoder: ${e.message}`);
        this.decoder = null;
        this.decoderCodec = '';
        this.stats.dropped += this.pending.size;
        this.pending.clear();
        this.awaitKey = true;
      },
    });
    return dec;
  }

  resetDecoder() {
    this.awaitKey = true;
    this.jpegGen = (this.jpegGen || 0) + 1;
    this.lastDrawnSeq = -1n;
    this.stats.dropped += this.pending.size;
    this.pending.clear();
    if (this.decoder) {
      const dec = this.decoder;
      this.decoder = null;
      this.decoderCodec = '';
      if (dec.state !== 'closed') dec.close();
    }
  }

  onDecoded(dec, frame) {
    const meta = this.pending.get(frame.timestamp);
    if (dec !== this.decoder || !meta) {
      frame.close();
      return;
    }
    // Outputs come in decode order; anything submitted before this one and
    // still pending was discarded by the decoder.
    for (const [ts] of this.pending) {
      if (ts >= frame.timestamp) break;
      this.pending.delete(ts);
      this.stats.dropped++;
    }
    this.pending.delete(frame.timestamp);
    this.draw(frame, frame.displayWidth, frame.displayHeight, meta);
    frame.close();
  }

  decodeJpeg(payload, meta) {
    const st = this.stats;
    if (this.jpegInFlight >= this.opts.maxJpegInFlight) {
      st.dropped++;
      return;
    }
    this.jpegInFlight++;
    const gen = this.jpegGen || 0;
    // The payload is a view into the message; the Blob copies it.
    createImageBitmap(new Blob([payload], { type: 'image/jpeg' })).then(
      (bmp) => {
        this.jpegInFlight--;
        if (gen !== (this.jpegGen || 0) || meta.frameSeq <= this.lastDrawnSeq) {
          st.dropped++;
        } else {
          this.draw(bmp, bmp.width, bmp.height, meta);
        }
        bmp.close();
      },
      (e) => {
        this.jpegInFlight--;
        st.decodeErrors++;
        this.fail(`decoding JPEG frame ${meta.frameSeq}: ${e.message}`);
      },
    );
  }

  // draw puts a decoded picture on the canvas. The frame age is taken as
  // the decoder hands the picture over (before drawing); drawMs is what the
  // drawing then takes.
  draw(image, w, h, meta) {
    const st = this.stats;
    const t = nowMs();
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx2d.drawImage(image, 0, 0, w, h);
    this.bannerText = '';
    const dt = nowMs() - t;
    st.drawMs = st.drawMs ? st.drawMs * 0.9 + dt * 0.1 : dt;
    st.width = w;
    st.height = h;
    st.framesDecoded++;
    this.window.decoded++;
    this.lastDrawnSeq = meta.frameSeq;
    if (Number.isNaN(st.firstFrameMs)) st.firstFrameMs = t - st.connectStartedAt;
    let age = NaN;
    if (meta.stamp !== null) {
      age = t - meta.stamp;
      st.ageMs = age;
      this.window.ages.push(age);
      this.ages[this.agesN % this.ages.length] = age;
      this.agesN++;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: { frameSeq: meta.frameSeq, ageMs: age, width: w, height: h, codec: st.codec } }));
  }

  // --- overlay -------------------------------------------------------------

  tick() {
    const st = this.stats;
    const t = nowMs();
    const w = this.window;
    if (t - w.at >= 1000) {
      const secs = (t - w.at) / 1000;
      st.fps = w.decoded / secs;
      st.bitrateBps = (w.bytes * 8) / secs;
      const sorted = w.ages.sort((a, b) => a - b);
      st.ageP50Ms = percentile(sorted, 0.5);
      st.ageP95Ms = percentile(sorted, 0.95);
      this.window = { at: t, decoded: 0, bytes: 0, ages: [] };
    }
    st.decodeQueue = this.decoder ? this.decoder.decodeQueueSize : this.jpegInFlight;
    const lostAfter = this.opts.videoLostMs || Math.max(500, 4 * this.intervalMs);
    st.videoLost = this.state !== 'live' || !st.lastFrameAt || t - st.lastFrameAt > lostAfter;
    this.renderBanner(t);
    if (this.overlayEl) this.renderOverlay();
  }

  renderBanner(t) {
    const st = this.stats;
    let text = '';
    if (this.state === 'connecting') text = 'CONNECTING';
    else if (this.state === 'reconnecting') {
      const s = Math.max(0, (this.reconnectAt - t) / 1000);
      text = `DISCONNECTED · reconnecting in ${s.toFixed(1)} s`;
    } else if (this.state === 'stopped') text = 'STOPPED';
    else if (this.state === 'paused') text = 'REPLAY PAUSED';
    else if (this.state === 'ended') text = 'END OF RECORDING';
    else if (this.bannerText) text = this.bannerText;
    else if (st.videoLost) {
      text = st.lastFrameAt ? `VIDEO LOST · last frame ${((t - st.lastFrameAt) / 1000).toFixed(1)} s ago` : 'WAITING FOR VIDEO';
    }
    if (this.banner.textContent !== text) this.banner.textContent = text;
    this.banner.hidden = text === '';
    this.container.classList.toggle('sdr-lost', st.videoLost);
  }

  renderOverlay() {
    const st = this.stats;
    const age = Number.isNaN(st.ageMs) ? 'n/a' : `${st.ageMs.toFixed(1)} ms (p95 ${fmt(st.ageP95Ms)})`;
    const lines = [
      `${st.codec || '-'} ${st.width}x${st.height}  ${st.fps.toFixed(1)} fps  ${(st.bitrateBps / 1e6).toFixed(2)} Mbit/s`,
      `age ${age}`,
      `queue ${st.decodeQueue}  dropped ${st.dropped}  missed ${st.missed}  errors ${st.decodeErrors}  draw ${st.drawMs.toFixed(1)} ms`,
    ];
    if (st.lastError) lines.push(st.lastError);
    const text = lines.join('\n');
    if (this.overlayEl.textContent !== text) this.overlayEl.textContent = text;
    const r = this.replay;
    this.modeEl.hidden = !r;
    if (r) {
      const pos = this.position();
      const m = `REPLAY ${r.speed}x · ${pos.toISOString().slice(11, 19)} UTC`;
      if (this.modeEl.textContent !== m) this.modeEl.textContent = m;
    }
    const gate = this.safety.gate || '—'; // the gate reports changes only
    const sim = this.safety.sim ? ` · sim ${this.safety.sim}` : '';
    const s = `gate ${gate}${sim}`;
    if (this.safetyEl.textContent !== s) this.safetyEl.textContent = s;
    this.safetyEl.dataset.mode = badgeMode(this.safety.gate, this.safety.sim);
    const c = this.control;
    this.controlEl.hidden = !c;
    if (c) {
      const t = controlText(c);
      if (this.controlEl.textContent !== t) this.controlEl.textContent = t;
      this.controlEl.dataset.mine = String(c.mine);
    }
  }
}

// badgeMode colours the safety badge by the more severe of the video gate
// and the simulator's own state.
function badgeMode(gate, sim) {
  const s = String(sim || '').toUpperCase();
  if (gate === 'ESTOP' || gate === 'GATED' || s.includes('ESTOP') || s.includes('E-STOP')) return 'ESTOP';
  if (gate === 'HOLD' || s.includes('HOLD') || s.includes('PAUSE')) return 'HOLD';
  if (gate === 'ARMED') return 'ARMED';
  return 'unknown';
}

/** controlText says who holds the control lease, as the player shows it. */
export function controlText(c) {
  if (c.mine) return 'you have control';
  return c.held ? `viewer · ${c.holder} has control` : 'viewer · nobody has control';
}

function fmt(v) {
  return Number.isNaN(v) ? 'n/a' : `${v.toFixed(1)}`;
}

function summarizeState(json, text) {
  if (json && typeof json === 'object') {
    for (const k of ['state', 'mode', 'status']) if (typeof json[k] === 'string') return json[k];
    return JSON.stringify(json).slice(0, 60);
  }
  return text.slice(0, 60);
}

// wsURL resolves a path or URL against the page: http(s) becomes ws(s).
function wsURL(s) {
  const u = new URL(s, location.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.href;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  e.className = cls;
  e.textContent = text;
  return e;
}

function ensureStylesheet() {
  const href = new URL('./player.css', import.meta.url).href;
  for (const l of document.querySelectorAll('link[rel=stylesheet]')) if (l.href === href) return;
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = href;
  document.head.appendChild(link);
}
