// The demo page: a Player, its command buttons, keyboard driving, the ack
// log and the telemetry panel. The WebSocket URL comes from ?ws=<url>, else
// the sdr-stream-url meta tag (sdr_player's stream_url), else /stream/ws.
// ?await_key_on_gap=1 sets the Player option of that name.
import { Player } from './player.js';
import { KeyboardDriver, TelemetryPanel, CommandLog, ControlPanel } from './controls.js';
import { Timeline } from './timeline.js';

const params = new URLSearchParams(location.search);
const options = {};
const meta = document.querySelector('meta[name="sdr-stream-url"]');
if (params.get('ws')) options.url = params.get('ws');
else if (meta && meta.content) options.url = meta.content;
if (params.get('await_key_on_gap') === '1') options.awaitKeyOnGap = true;

const player = new Player(document.getElementById('video'), options);
const driver = new KeyboardDriver(player);
new TelemetryPanel(player, document.getElementById('telemetry'));
const acks = new CommandLog(player, document.getElementById('acks'));
new ControlPanel(player, document.getElementById('control'));
// The timeline appears only when the stream has a flight recording.
const timeline = new Timeline(player, document.getElementById('timeline'));

const stateEl = document.getElementById('state');
function showState() {
  const state = player.replay && player.state === 'live' ? 'replay' : player.state;
  stateEl.textContent = `${state} · ${player.url}`;
  // A replay takes no commands: the command buttons are off while it plays.
  const replay = !!player.replay;
  for (const b of document.querySelectorAll('aside button, aside select')) b.disabled = replay;
  document.getElementById('replay-note').hidden = !replay;
}
player.addEventListener('state', showState);
player.addEventListener('replay', showState);

// send shows a command that could not go out (no connection) in the log.
function send(action, data) {
  if (!player.command(action, data)) {
    acks.add({ action, cmd_seq: '-', status: 'not sent', detail: 'not connected', rejected: true });
  }
}
document.getElementById('estop').onclick = () => send('estop', { reason: 'operator' });
document.getElementById('estop-clear').onclick = () => send('estop_clear', {});
document.getElementById('pause').onclick = () => send('pause', {});
document.getElementById('reset').onclick = () => send('reset', {});
// command.genesis.settings, as the SDR_OS app sends it: the simulator (or
// caddy sdr-testsrc --nats) encodes with the new codec or size.
document.getElementById('apply').onclick = () => {
  const data = { codec: document.getElementById('codec').value };
  const res = document.getElementById('res').value;
  if (res) data.camera_res = res;
  send('settings', data);
};

const driveEl = document.getElementById('drive');
setInterval(() => {
  const v = driver.velocity();
  driveEl.textContent = driver.held.size
    ? `set_cmd_vel x=${v.linear_x.toFixed(2)} y=${v.linear_y.toFixed(2)} z=${v.angular_z.toFixed(2)}`
    : 'stopped';
}, 100);

driver.attach();
player.start();

// For tests and the console.
window.sdrPlayer = player;
window.sdrTimeline = timeline;
