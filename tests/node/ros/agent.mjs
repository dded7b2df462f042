// roslibjs agent for the sdr_ros live tests (tests/ros).
//
// Runs any number of unmodified roslibjs 2.x clients (npm `roslib`, which
// uses the `ws` package for its WebSocket in Node.js 20) and drives them from
// JSON lines on stdin; everything the clients see comes back as JSON lines on
// stdout. The Go test on the other end plays the rosbridge upstream with its
// protocol-faithful test server, because ROS 2 and rosbridge_server cannot be
// installed on these machines.
//
// Commands (one JSON object per line):
//   {"cmd":"connect","url":U,"clients":N}             -> {"ev":"connected","client":i} each, then {"ev":"ready","n":N}
//   {"cmd":"subscribe","clients":[i..]|"all","topic":T,"type":Y,"throttle_rate":R,"queue_length":Q,"compression":C}
//                                                     -> {"ev":"msg","client":i,"topic":T,"msg":M} per message
//   {"cmd":"unsubscribe","clients":[i..]|"all","topic":T}
//   {"cmd":"publish","client":i,"topic":T,"type":Y,"msg":M}
//   {"cmd":"call","client":i,"service":S,"type":Y,"args":A,"tag":G}
//                                                     -> {"ev":"response","client":i,"tag":G,"ok":bool,"values":V}
//   {"cmd":"raw","client":i,"msg":M}                  (ros.callOnConnection: ops roslib has no API for)
//   {"cmd":"listen","client":i,"topic":T}             -> {"ev":"msg",...} for publishes on T, however they came
//   {"cmd":"close","clients":[i..]|"all"}
//   {"cmd":"sync","tag":G}                            -> {"ev":"sync","tag":G} (all earlier commands ran)
// Every status op a client receives is reported as {"ev":"status","client":i,"status":S}.
import { createInterface } from 'node:readline';
import { Ros, Topic, Service } from 'roslib';

const clients = [];
const topics = new Map(); // `${client}\n${topic}` -> Topic

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function pick(sel) {
  if (sel === 'all' || sel === undefined) return clients.map((_, i) => i);
  return sel;
}

function connect(url, n) {
  let open = 0;
  for (let k = 0; k < n; k++) {
    const i = clients.length;
    const ros = new Ros({});
    clients.push(ros);
    ros.on('connection', () => {
      // the transport exists once connect() resolved; watch every status op
      ros.transport.on('message', (m) => {
        if (m && m.op === 'status') out({ ev: 'status', client: i, status: m });
      });
      out({ ev: 'connected', client: i });
      if (++open === n) out({ ev: 'ready', n });
    });
    ros.on('close', () => out({ ev: 'close', client: i }));
    ros.on('error', (e) => out({ ev: 'error', client: i, error: String(e && e.message ? e.message : e) }));
    ros.connect(url).catch((e) => out({ ev: 'error', client: i, error: String(e) }));
  }
}

function topicOf(i, c) {
  const key = `${i}\n${c.topic}`;
  let t = topics.get(key);
  if (!t) {
    t = new Topic({
      ros: clients[i],
      name: c.topic,
      messageType: c.type || '',
      throttle_rate: c.throttle_rate || 0,
      queue_length: c.queue_length || 0,
      compression: c.compression || 'none',
    });
    topics.set(key, t);
  }
  return t;
}

function run(c) {
  switch (c.cmd) {
    case 'connect':
      connect(c.url, c.clients);
      break;
    case 'subscribe':
      for (const i of pick(c.clients)) {
        topicOf(i, c).subscribe((msg) => out({ ev: 'msg', client: i, topic: c.topic, msg }));
      }
      break;
    case 'unsubscribe':
      for (const i of pick(c.clients)) {
        const key = `${i}\n${c.topic}`;
        const t = topics.get(key);
        if (t) {
          t.unsubscribe();
          topics.delete(key);
        }
      }
      break;
    case 'publish':
      topicOf(c.client, c).publish(c.msg);
      break;
    case 'call': {
      const s = new Service({ ros: clients[c.client], name: c.service, serviceType: c.type || '' });
      s.callService(
        c.args || {},
        (values) => out({ ev: 'response', client: c.client, tag: c.tag, ok: true, values }),
        (values) => out({ ev: 'response', client: c.client, tag: c.tag, ok: false, values }),
      );
      break;
    }
    case 'raw':
      clients[c.client].callOnConnection(c.msg);
      break;
    case 'listen':
      clients[c.client].on(c.topic, (m) => out({ ev: 'msg', client: c.client, topic: c.topic, msg: m.msg }));
      break;
    case 'close':
      for (const i of pick(c.clients)) clients[i].close();
      break;
    case 'sync':
      out({ ev: 'sync', tag: c.tag });
      break;
    default:
      out({ ev: 'error', error: `unknown command ${c.cmd}` });
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  try {
    run(JSON.parse(line));
  } catch (e) {
    out({ ev: 'error', error: String(e && e.stack ? e.stack : e) });
  }
});
rl.on('close', () => {
  for (const ros of clients) ros.close();
  setTimeout(() => process.exit(0), 100);
});
