// Command controls and the telemetry panel of the sdr-caddy demo page; usable
// from other pages beside a Player:
//
//   import { Player } from '/sdr/player.js';
//   import { KeyboardDriver, TelemetryPanel } from '/sdr/controls.js';

import { controlText } from './player.js';

/** Motion keys: [linear_x, linear_y, angular_z] per unit of speed. */
const KEYS = {
  KeyW: [1, 0, 0],
  ArrowUp: [1, 0, 0],
  KeyS: [-1, 0, 0],
  ArrowDown: [-1, 0, 0],
  KeyA: [0, 0, 1],
  ArrowLeft: [0, 0, 1],
  KeyD: [0, 0, -1],
  ArrowRight: [0, 0, -1],
  KeyQ: [0, 1, 0],
  KeyE: [0, -1, 0],
};

/**
 * KeyboardDriver turns held keys into set_cmd_vel commands: W/S or arrows
 * drive, A/D or arrows turn, Q/E strafe. While a key is held it resends
 * every periodMs with ttl_ms = ttlMs, so the robot stops by itself if the
 * page goes away; releasing every key sends one zero command. Space and
 * Escape send estop.
 */
export class KeyboardDriver {
  constructor(player, o = {}) {
    this.player = player;
    this.linear = o.linear ?? 0.5; // m/s
    this.angular = o.angular ?? 1.0; // rad/s
    this.periodMs = o.periodMs ?? 100;
    this.ttlMs = o.ttlMs ?? 300;
    this.target = o.target ?? window;
    this.held = new Set();
    this.timer = 0;
    this.onDown = (e) => this.keyDown(e);
    this.onUp = (e) => this.keyUp(e);
    this.onBlur = () => this.releaseAll();
  }

  attach() {
    this.target.addEventListener('keydown', this.onDown);
    this.target.addEventListener('keyup', this.onUp);
    window.addEventListener('blur', this.onBlur);
  }

  detach() {
    this.target.removeEventListener('keydown', this.onDown);
    this.target.removeEventListener('keyup', this.onUp);
    window.removeEventListener('blur', this.onBlur);
    this.releaseAll();
  }

  /** velocity is the set_cmd_vel data for the keys held now. */
  velocity() {
    let x = 0, y = 0, z = 0;
    for (const k of this.held) {
      const v = KEYS[k];
      x += v[0];
      y += v[1];
      z += v[2];
    }
    const c = (v) => Math.max(-1, Math.min(1, v));
    return { linear_x: c(x) * this.linear, linear_y: c(y) * this.linear, angular_z: c(z) * this.angular };
  }

  keyDown(e) {
    // Escape stops the robot wherever the focus is; Space unless it types.
    if (e.code === 'Escape' || (e.code === 'Space' && !isTextEntry(e))) {
      e.preventDefault();
      if (e.repeat) return;
      // A focused button (Clear E-STOP, say) must not be pressed by the
      // same Space that stops the robot.
      if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
      this.releaseAll();
      this.player.command('estop', { reason: 'operator' });
      return;
    }
    if (isTyping(e) || !(e.code in KEYS)) return;
    e.preventDefault();
    if (this.held.has(e.code)) return;
    this.held.add(e.code);
    this.send();
    if (!this.timer) this.timer = setInterval(() => this.send(), this.periodMs);
  }

  keyUp(e) {
    if (e.code === 'Space' && !isTextEntry(e)) e.preventDefault();
    if (!this.held.delete(e.code)) return;
    if (this.held.size === 0) this.releaseAll();
    else this.send();
  }

  releaseAll() {
    const wasDriving = this.held.size > 0 || this.timer;
    this.held.clear();
    clearInterval(this.timer);
    this.timer = 0;
    if (wasDriving) this.send();
  }

  send() {
    this.player.command('set_cmd_vel', this.velocity(), { ttlMs: this.ttlMs });
  }
}

// isTextEntry: the key goes into a text field.
function isTextEntry(e) {
  const t = e.target;
  return t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable);
}

// isTyping: the key belongs to a form control (arrows move a select).
function isTyping(e) {
  const t = e.target;
  return t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
}

/**
 * TelemetryPanel shows the latest value of every telemetry subject in a
 * table inside container, with its age.
 */
export class TelemetryPanel {
  constructor(player, container, o = {}) {
    this.player = player;
    this.maxChars = o.maxChars ?? 160;
    this.table = document.createElement('table');
    this.table.className = 'sdr-telemetry';
    container.appendChild(this.table);
    this.rows = new Map();
    player.addEventListener('telemetry', (e) => this.update(e.detail));
    this.timer = setInterval(() => this.ages(), 500);
  }

  update(d) {
    let row = this.rows.get(d.subject);
    if (!row) {
      row = this.table.insertRow();
      row.insertCell().textContent = d.subject.replace(/^telemetry\./, '');
      row.insertCell().className = 'age';
      row.insertCell().className = 'value';
      row.title = d.subject;
      this.rows.set(d.subject, row);
      const sorted = [...this.rows.keys()].sort();
      for (const s of sorted) this.table.appendChild(this.rows.get(s));
    }
    row.dataset.at = d.at;
    row.cells[1].textContent = '0.0 s';
    const v = d.json !== undefined ? JSON.stringify(d.json) : d.text;
    row.cells[2].textContent = v.length > this.maxChars ? v.slice(0, this.maxChars) + '…' : v;
  }

  ages() {
    const now = Date.now();
    for (const row of this.rows.values()) {
      row.cells[1].textContent = `${((now - Number(row.dataset.at)) / 1000).toFixed(1)} s`;
    }
  }
}

/** CommandLog lists sent commands' acks; rejections are highlighted. */
export class CommandLog {
  constructor(player, container, o = {}) {
    this.max = o.max ?? 50;
    this.list = document.createElement('ol');
    this.list.className = 'sdr-command-log';
    container.appendChild(this.list);
    player.addEventListener('ack', (e) => this.add(e.detail));
  }

  add(a) {
    const detail = a.detail ? ` · ${typeof a.detail === 'string' ? a.detail : JSON.stringify(a.detail)}` : '';
    const key = `${a.action}|${a.status}|${detail}`;
    let li = this.list.firstChild;
    // Driving sends 10 commands a second: repeats of the same answer
    // update the newest line instead of pushing the others out.
    if (li && li.dataset.key === key) {
      li.dataset.count = String(Number(li.dataset.count) + 1);
    } else {
      li = document.createElement('li');
      li.className = a.rejected ? 'rejected' : 'ok';
      li.dataset.key = key;
      li.dataset.count = '1';
      this.list.prepend(li);
      while (this.list.children.length > this.max) this.list.lastChild.remove();
    }
    const n = Number(li.dataset.count);
    li.textContent = `#${a.cmd_seq} ${a.action}: ${a.status}${detail}${n > 1 ? ` (×${n})` : ''}`;
  }
}

/**
 * ControlPanel shows who holds the control lease and offers Take and
 * Release buttons; it stays hidden unless the server has a lease (the
 * player's 'control' event).
 */
export class ControlPanel {
  constructor(player, container) {
    this.player = player;
    this.container = container;
    this.status = document.createElement('div');
    this.status.className = 'sdr-control-status';
    this.take = document.createElement('button');
    this.take.textContent = 'Take control';
    this.take.className = 'take-control';
    this.take.onclick = () => player.takeControl();
    this.release = document.createElement('button');
    this.release.textContent = 'Release control';
    this.release.className = 'release-control';
    this.release.onclick = () => player.releaseControl();
    const buttons = document.createElement('div');
    buttons.className = 'buttons';
    buttons.append(this.take, this.release);
    container.append(this.status, buttons);
    container.hidden = true;
    player.addEventListener('control', (e) => this.update(e.detail));
  }

  update(c) {
    this.container.hidden = !c;
    if (!c) return;
    this.status.textContent = controlText(c);
    this.take.hidden = c.mine;
    this.release.hidden = !c.mine;
  }
}
