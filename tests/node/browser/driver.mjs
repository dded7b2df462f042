// Drives Debian's headless chromium through playwright-core for the Go tests
// in tests/browser and bench/browser. It reads one JSON request per line on
// stdin and answers one JSON line on stdout: {"id":N,"ok":true,...} or
// {"id":N,"ok":false,"error":"..."}.
//
// Requests ({"id":N,"op":...}):
//   open        {url, name?, noWebCodecs?} open a page (tab) named name (default "main"), optionally without WebCodecs
//   close       {name}                    close a page
//   eval        {name, expr}              evaluate a JS expression in the page, return {value}
//   stats       {name}                    the player's stats (window.sdrPlayer.stats)
//   canvas      {name, grid?}             sample a grid of canvas pixels: {width, height, samples, distinct, blank}
//   pixels      {name}                    the whole canvas: {width, height, rgba (base64)}
//   waitFrames  {name, count, timeoutMs}  wait until framesDecoded >= count
//   waitBanner  {name, visible, timeoutMs, pollMs?}  wait for the video-lost banner; returns {at: Date.now()}
//   ages        {name, skip?, count}      wait for count frame ages after skip; {ages, dropped}
//   press       {name, key, focus?}       focus a selector, then press a key (real input events)
//   down / up   {name, key}               hold / release a key
//   screenshot  {name, path}              PNG of the page
//   console     {name}                    console messages and page errors so far
//   quit        {}
//
// Environment: CHROMIUM (default /usr/bin/chromium), SDR_BROWSER_PROFILE
// (a fresh directory for --user-data-dir; required), SDR_BROWSER_HOST_RULES
// (optional: Chromium's --host-resolver-rules).
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const profile = process.env.SDR_BROWSER_PROFILE;
if (!profile) {
  console.error('driver: SDR_BROWSER_PROFILE (a fresh --user-data-dir) is required');
  process.exit(2);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Keep timers and rendering at full rate in every tab.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    // SDR_BROWSER_HOST_RULES, e.g. "MAP *.test 127.0.0.1": names that are
    // this machine, for a page on one host name talking to a server on
    // another (a cross-origin setup that loopback names cannot play).
    ...(process.env.SDR_BROWSER_HOST_RULES ? [`--host-resolver-rules=${process.env.SDR_BROWSER_HOST_RULES}`] : []),
    // WebRTC over loopback, with plain addresses: without these Chromium
    // offers only an mDNS name for its host candidate, which the server
    // cannot resolve where multicast does not reach it (a machine or
    // network namespace whose only interface is lo).
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});

const pages = new Map();
const logs = new Map();

function page(name = 'main') {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${JSON.stringify(name)}`);
  return p;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(p, fn, arg, timeoutMs, pollMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await p.evaluate(fn, arg);
    if (v) return v;
    if (Date.now() > deadline) return null;
    await sleep(pollMs);
  }
}

const ops = {
  async open({ url, name = 'main', noWebCodecs = false }) {
    if (pages.has(name)) throw new Error(`page ${name} is already open`);
    const p = await context.newPage();
    // As on a plain-HTTP page of another host: no WebCodecs.
    if (noWebCodecs) await p.addInitScript(() => { delete window.VideoDecoder; delete window.ImageDecoder; });
    const log = [];
    logs.set(name, log);
    p.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
    p.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    pages.set(name, p);
    const openedAt = Date.now();
    await p.goto(url, { waitUntil: 'load' });
    await p.waitForFunction(() => window.sdrPlayer !== undefined, null, { timeout: 10000 });
    return { openedAt };
  },
  async close({ name = 'main' }) {
    await page(name).close();
    pages.delete(name);
    return {};
  },
  async eval({ name, expr }) {
    return { value: await page(name).evaluate(expr) };
  },
  async stats({ name }) {
    return { stats: await page(name).evaluate(() => ({ ...window.sdrPlayer.stats })) };
  },
  async canvas({ name, grid = 16 }) {
    return page(name).evaluate((grid) => {
      const c = document.querySelector('canvas.sdr-canvas');
      const ctx = c.getContext('2d');
      const img = ctx.getImageData(0, 0, c.width, c.height).data;
      const samples = [];
      const distinct = new Set();
      for (let gy = 0; gy < grid; gy++) {
        for (let gx = 0; gx < grid; gx++) {
          const x = Math.floor(((gx + 0.5) * c.width) / grid);
          const y = Math.floor(((gy + 0.5) * c.height) / grid);
          const i = (y * c.width + x) * 4;
          const px = (img[i] << 16) | (img[i + 1] << 8) | img[i + 2];
          samples.push(px);
          distinct.add(px >> 4); // tolerate codec noise in the low bits
        }
      }
      return { width: c.width, height: c.height, samples, distinct: distinct.size, blank: distinct.size <= 1 };
    }, grid);
  },
  async pixels({ name }) {
    return page(name).evaluate(() => {
      const c = document.querySelector('canvas.sdr-canvas');
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let bin = '';
      for (let i = 0; i < data.length; i += 0x8000) bin += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
      return { width: c.width, height: c.height, rgba: btoa(bin) };
    });
  },
  async waitFrames({ name, count, timeoutMs = 10000 }) {
    const p = page(name);
    const ok = await waitFor(p, (n) => window.sdrPlayer.stats.framesDecoded >= n, count, timeoutMs);
    return { reached: !!ok, stats: await p.evaluate(() => ({ ...window.sdrPlayer.stats })) };
  },
  async waitBanner({ name, visible = true, timeoutMs = 5000, pollMs = 10 }) {
    const p = page(name);
    const ok = await waitFor(
      p,
      (want) => {
        const b = document.querySelector('.sdr-banner');
        return b && !b.hidden === want && b.textContent !== '' === want ? { text: b.textContent } : null;
      },
      visible,
      timeoutMs,
      pollMs,
    );
    return { at: Date.now(), seen: !!ok, text: ok ? ok.text : '' };
  },
  async ages({ name, skip = 0, count, timeoutMs = 60000 }) {
    const p = page(name);
    const start = await p.evaluate(() => window.sdrPlayer.agesN);
    const want = start + skip + count;
    const ok = await waitFor(p, (n) => window.sdrPlayer.agesN >= n, want, timeoutMs, 100);
    if (!ok) throw new Error(`only ${await p.evaluate(() => window.sdrPlayer.agesN) - start} frame ages in ${timeoutMs} ms`);
    return p.evaluate(
      ({ count }) => ({ ages: window.sdrPlayer.frameAges().slice(-count), stats: { ...window.sdrPlayer.stats } }),
      { count },
    );
  },
  async press({ name, key, focus }) {
    const p = page(name);
    if (focus) await p.focus(focus);
    await p.keyboard.press(key);
    return {};
  },
  async down({ name, key }) {
    await page(name).keyboard.down(key);
    return {};
  },
  async up({ name, key }) {
    await page(name).keyboard.up(key);
    return {};
  },
  async screenshot({ name, path }) {
    await page(name).screenshot({ path });
    return { path };
  },
  async console({ name }) {
    return { lines: logs.get(name) || [] };
  },
};

const rl = createInterface({ input: process.stdin });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
out({ id: 0, ok: true, ready: true, version: context.browser()?.version() ?? '' });
for await (const line of rl) {
  if (!line.trim()) continue;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    out({ id: -1, ok: false, error: `bad request line: ${e.message}` });
    continue;
  }
  if (req.op === 'quit') {
    out({ id: req.id, ok: true });
    break;
  }
  const fn = ops[req.op];
  if (!fn) {
    out({ id: req.id, ok: false, error: `unknown op ${JSON.stringify(req.op)}` });
    continue;
  }
  try {
    out({ id: req.id, ok: true, ...(await fn(req)) });
  } catch (e) {
    out({ id: req.id, ok: false, error: e.message });
  }
}
await context.close();
