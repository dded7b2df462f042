// The flight recorder's timeline for a Player: a live/replay switch, a scrub
// bar over the recording with its markers (safety gate transitions, refused
// commands) and kept windows, pause and speed, and a Keep button that asks
// the recorder to keep a window (the keep command): by default the last
// 2 minutes and the next 30 s, under the recorder's own name; the fields
// beside the button set the name and the seconds before and after. It asks
// the stream for the recording's extent
// (a plain GET of the stream URL with ?recording) and stays hidden unless
// that answers 200, so a stream without the sdr_recorder app looks as before.

const SPEEDS = [0.25, 0.5, 1, 2, 4];

// What the recorder's states other than recording mean to an operator.
const RECORDER_NOTES = {
  paused: 'the recorder is paused (admin API: POST /sdr/recorder/resume): nothing is recorded',
  stopped: 'the recorder stopped: JetStream is out of storage; free space or lower max_bytes, then reload',
  starting: 'the recorder is setting up its JetStream stream: records wait for it',
};

/** recordingURL is the stream's ?recording URL (http(s)) for a ws(s) URL. */
export function recordingURL(wsUrl) {
  const u = new URL(wsUrl);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  u.search = '';
  u.searchParams.set('recording', '');
  return u.href;
}

/**
 * Timeline draws the recording's timeline into container and drives
 * player's replay. Events on the Player ('replay') keep it in step.
 */
export class Timeline {
  /**
   * @param {import('./player.js').Player} player
   * @param {HTMLElement} container
   * @param {{refreshMs?: number}} [options]
   */
  constructor(player, container, options = {}) {
    this.player = player;
    this.container = container;
    this.refreshMs = options.refreshMs ?? 5000;
    this.url = recordingURL(player.url);
    this.extent = null; // {start: Date, end: Date, markers}
    container.hidden = true;
    container.classList.add('sdr-timeline');

    this.modeEl = el('span', 'sdr-tl-mode', 'LIVE');
    // The recorder's state, shown when it does not record (paused on the
    // admin API, stopped when storage ran out).
    this.recorder = '';
    this.recorderEl = el('span', 'sdr-tl-recorder', '');
    this.recorderEl.hidden = true;
    this.liveBtn = el('button', 'sdr-tl-live', 'Live');
    this.liveBtn.title = 'back to the live video';
    this.pauseBtn = el('button', 'sdr-tl-pause', 'Replay');
    this.pauseBtn.title = 'pause or resume the replay';
    this.speedSel = document.createElement('select');
    this.speedSel.className = 'sdr-tl-speed';
    this.speedSel.title = 'replay speed';
    for (const s of SPEEDS) {
      const o = document.createElement('option');
      o.value = String(s);
      o.textContent = `${s}x`;
      if (s === 1) o.selected = true;
      this.speedSel.appendChild(o);
    }
    this.bar = el('div', 'sdr-tl-bar', '');
    this.bar.title = 'click to replay from that moment';
    this.cursor = el('div', 'sdr-tl-cursor', '');
    this.markersEl = el('div', 'sdr-tl-markers', '');
    this.keptEl = el('div', 'sdr-tl-kept-windows', '');
    this.bar.append(this.keptEl, this.markersEl, this.cursor);
    this.keepBtn = el('button', 'sdr-tl-keep', 'Keep');
    this.keepBtn.title = 'keep the window set beside, out of the recording\'s retention';
    // The keep's name (empty: the recorder names it) and window, in the
    // recorder's bounds (before_s up to 600, after_s up to 300).
    this.keepName = input('text', 'sdr-tl-keep-name', 'name of the kept window (letters, digits, - and _; empty: one is made up)');
    this.keepName.placeholder = 'name';
    this.keepName.maxLength = 32;
    this.keepName.pattern = '[A-Za-z0-9_\\-]{1,32}';
    this.keepBefore = input('number', 'sdr-tl-keep-before', 'seconds before now to keep (0-600)');
    Object.assign(this.keepBefore, { min: '0', max: '600', step: '1', value: '120', placeholder: '120' });
    this.keepAfter = input('number', 'sdr-tl-keep-after', 'seconds after now to keep (0-300)');
    Object.assign(this.keepAfter, { min: '0', max: '300', step: '1', value: '30', placeholder: '30' });
    this.keepFields = [this.keepName, this.keepBefore, this.keepAfter];
    this.timeEl = el('span', 'sdr-tl-time', '');
    const row = el('div', 'sdr-tl-row', '');
    const keepEl = el('span', 'sdr-tl-keep-window', '');
    keepEl.append(this.keepBtn, this.keepName, el('span', '', '-'), this.keepBefore, el('span', '', 's +'), this.keepAfter, el('span', '', 's'));
    row.append(this.modeEl, this.recorderEl, this.pauseBtn, this.speedSel, this.liveBtn, keepEl, this.timeEl);
    container.append(row, this.bar);

    this.bar.addEventListener('click', (e) => {
      if (!this.extent) return;
      const r = this.bar.getBoundingClientRect();
      const f = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
      this.seek(new Date(this.extent.start.getTime() + f * (this.extent.end - this.extent.start)));
    });
    this.pauseBtn.onclick = () => {
      const rp = player.replay;
      if (!rp) {
        // From live: replay the last ten seconds.
        if (this.extent) this.seek(new Date(Math.max(this.extent.start.getTime(), this.extent.end.getTime() - 10000)));
      } else if (rp.paused) player.resume();
      else player.pause();
    };
    this.speedSel.onchange = () => player.setSpeed(Number(this.speedSel.value));
    this.liveBtn.onclick = () => player.live();
    this.keepBtn.onclick = () => this.keep();
    player.addEventListener('ack', (e) => {
      if (e.detail.action === 'keep' && !e.detail.rejected) this.refresh();
    });
    player.addEventListener('replay', () => this.render());
    player.addEventListener('state', () => this.render());
    this.timer = setInterval(() => this.render(), 250);
    this.refresh();
  }

  /**
   * keep sends the keep command with the window the fields set; a field
   * out of bounds is pointed out and nothing is sent.
   */
  keep() {
    for (const f of this.keepFields) {
      if (!f.checkValidity()) {
        f.reportValidity();
        return null;
      }
    }
    const data = {};
    if (this.keepName.value !== '') data.name = this.keepName.value;
    if (this.keepBefore.value !== '') data.before_s = Number(this.keepBefore.value);
    if (this.keepAfter.value !== '') data.after_s = Number(this.keepAfter.value);
    return this.player.command('keep', data);
  }

  /** seek replays from t at the selected speed. */
  seek(t) {
    this.player.replayAt(t, Number(this.speedSel.value));
  }

  /** refresh asks the stream for the recording's extent and markers again. */
  async refresh() {
    clearTimeout(this.refreshTimer);
    try {
      const resp = await fetch(this.url, { cache: 'no-store' });
      if (resp.ok) {
        const j = await resp.json();
        this.recorder = typeof j.recorder === 'string' ? j.recorder : '';
        if (j.start && j.end) {
          this.extent = { start: new Date(j.start), end: new Date(j.end), markers: j.markers || [], kept: j.kept || [] };
          this.drawMarkers();
        }
        this.container.hidden = !this.extent;
      } else if (resp.status === 501 || resp.status === 404 || resp.status === 405) {
        this.container.hidden = true;
        return; // no recorder: no timeline, and no need to ask again
      }
    } catch (e) {
      // Unreachable (or another origin without CORS): keep what was drawn
      // and ask again, less often.
      this.refreshTimer = setTimeout(() => this.refresh(), 5 * this.refreshMs);
      return;
    }
    this.render();
    this.refreshTimer = setTimeout(() => this.refresh(), this.refreshMs);
  }

  frac(t) {
    const x = this.extent;
    const span = x.end - x.start;
    return span > 0 ? Math.min(1, Math.max(0, (t - x.start) / span)) : 1;
  }

  drawMarkers() {
    const frag = document.createDocumentFragment();
    for (const m of this.extent.markers) {
      const d = el('div', `sdr-tl-marker ${m.kind === 'gate' ? 'gate' : 'rejected'}`, '');
      d.dataset.kind = m.kind;
      if (m.mode) d.dataset.mode = m.mode;
      const what = m.kind === 'gate' ? `gate ${m.mode}` : `${m.outcome || 'rejected'} ${m.action}${m.reason ? ': ' + m.reason : ''}`;
      d.title = `${new Date(m.time).toISOString().slice(11, 23)} UTC · ${what}`;
      d.style.left = `${(this.frac(new Date(m.time)) * 100).toFixed(3)}%`;
      d.addEventListener('click', (e) => {
        e.stopPropagation();
        this.seek(new Date(new Date(m.time).getTime() - 2000));
      });
      frag.appendChild(d);
    }
    this.markersEl.replaceChildren(frag);
    const kept = document.createDocumentFragment();
    for (const k of this.extent.kept) {
      const from = this.frac(new Date(k.from)), to = this.frac(new Date(k.to));
      const d = el('div', 'sdr-tl-kept', '');
      d.dataset.name = k.name;
      d.dataset.stream = k.stream;
      d.dataset.copying = String(!!k.copying);
      d.title = `kept ${k.name} (${k.stream}): ${new Date(k.from).toISOString().slice(11, 19)} – ${new Date(k.to).toISOString().slice(11, 19)} UTC${k.copying ? ', copying' : ''}`;
      d.style.left = `${(from * 100).toFixed(3)}%`;
      d.style.width = `${(Math.max(0, to - from) * 100).toFixed(3)}%`;
      d.addEventListener('click', (e) => {
        e.stopPropagation();
        this.player.replayAt(new Date(k.from), Number(this.speedSel.value), { kept: k.name });
      });
      kept.appendChild(d);
    }
    this.keptEl.replaceChildren(kept);
  }

  render() {
    const rp = this.player.replay;
    this.container.dataset.mode = rp ? 'replay' : 'live';
    this.modeEl.textContent = rp ? (rp.paused ? 'REPLAY · paused' : 'REPLAY') : 'LIVE';
    this.pauseBtn.textContent = !rp ? 'Replay' : rp.paused ? 'Resume' : 'Pause';
    this.liveBtn.disabled = !rp;
    // A replay connection takes no commands: keep is live only.
    this.keepBtn.disabled = !!rp || this.player.state !== 'live';
    for (const f of this.keepFields) f.disabled = !!rp;
    if (rp && this.speedSel.value !== String(rp.speed)) this.speedSel.value = String(rp.speed);
    const rec = this.recorder;
    this.container.dataset.recorder = rec;
    this.recorderEl.hidden = rec === '' || rec === 'recording';
    if (!this.recorderEl.hidden) {
      this.recorderEl.textContent = `NOT RECORDING · ${rec}`;
      this.recorderEl.title = RECORDER_NOTES[rec] || `the recorder is ${rec}: nothing is recorded`;
    }
    if (!this.extent) return;
    const pos = rp ? this.player.position() : this.extent.end;
    this.cursor.style.left = `${(this.frac(pos) * 100).toFixed(3)}%`;
    const t = `${pos.toISOString().slice(11, 19)} UTC`;
    const span = `${this.extent.start.toISOString().slice(11, 19)} – ${this.extent.end.toISOString().slice(11, 19)}`;
    const text = rp ? `${t} (recorded ${span})` : `recorded ${span}`;
    if (this.timeEl.textContent !== text) this.timeEl.textContent = text;
  }
}

function input(type, cls, title) {
  const i = el('input', cls, '');
  i.type = type;
  i.title = title;
  return i;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  e.className = cls;
  e.textContent = text;
  return e;
}
