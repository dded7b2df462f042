package ros

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/chromium"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// rosPage is a page that loads roslibjs 2.x unmodified, as an ES module
// with its dependencies from tests/node/node_modules through an import map
// (the one roslib's importmap.js builds, pointing at local files instead of
// unpkg.com; eventemitter3's index.mjs wraps its CommonJS file, which a
// browser cannot import, so the map names the package's own ESM build), and
// drives it from window.rosTest.
const rosPage = `<!doctype html>
<meta charset="utf-8">
<title>roslibjs through sdr_ros</title>
<script type="importmap">
{"imports": {
  "roslib": "/nm/roslib/dist/RosLib.js",
  "bson": "/nm/bson/lib/bson.mjs",
  "cbor2": "/nm/cbor2/lib/index.js",
  "@cto.af/wtf8": "/nm/@cto.af/wtf8/lib/index.js",
  "eventemitter3": "/nm/eventemitter3/dist/eventemitter3.esm.js",
  "fast-png": "/nm/fast-png/lib/index.js",
  "fflate": "/nm/fflate/esm/browser.js",
  "iobuffer": "/nm/iobuffer/lib/iobuffer.js",
  "uuid": "/nm/uuid/dist/index.js"
}}
</script>
<script>
  // tests/node/browser/driver.mjs waits for window.sdrPlayer to be defined
  window.sdrPlayer = null;
  window.rosTest = { connected: false, odom: [], scan: [], statuses: [], calls: [], errors: [] };
</script>
<script type="module">
  import { Ros, Topic, Service } from 'roslib';
  const r = window.rosTest;
  const ros = new Ros({ url: new URL('/ros/', location.href).href.replace(/^http/, 'ws') });
  ros.on('connection', () => {
    r.connected = true;
    ros.transport.on('message', (m) => { if (m && m.op === 'status') r.statuses.push(m); });
  });
  ros.on('error', (e) => r.errors.push(String(e && e.message ? e.message : e)));
  new Topic({ ros, name: '/odom', messageType: 'nav_msgs/msg/Odometry' }).subscribe((m) => r.odom.push(m));
  new Topic({ ros, name: '/scan', messageType: 'sensor_msgs/msg/LaserScan', compression: 'cbor' }).subscribe((m) => r.scan.push(m));
  const cmdVel = new Topic({ ros, name: '/cmd_vel', messageType: 'geometry_msgs/Twist' });
  r.drive = (x) => cmdVel.publish({ linear: { x, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0 } });
  r.topics = () => new Service({ ros, name: '/rosapi/topics', serviceType: 'rosapi/Topics' })
    .callService({}, (v) => r.calls.push({ ok: true, v }), (v) => r.calls.push({ ok: false, v }));
</script>
`

// TestROSRoslibInChromium runs roslibjs in headless Chromium (the browser's
// own WebSocket, not the ws package) against the built binary, with the
// rostest upstream (ROS 2 and rosbridge_server cannot be installed here):
// JSON and CBOR subscriptions, a rosapi call, and a refused /cmd_vel.
func TestROSRoslibInChromium(t *testing.T) {
	if err := chromium.Available(); err != nil {
		t.Fatal(err)
	}
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	site := t.TempDir()
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte(rosPage), 0o644); err != nil {
		t.Fatal(err)
	}
	nm := filepath.Join(testenv.Root(), "tests", "node", "node_modules")
	port := testenv.FreePort(t)
	testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
}
http://127.0.0.1:%d {
	handle /ros/* {
		sdr_ros %s {
			publish /cmd_vel
			services /rosapi/topics
		}
	}
	handle_path /nm/* {
		root * %s
		file_server
	}
	handle {
		root * %s
		file_server
	}
}
`, port, up.URL(), nm, site), nil, func() error {
		return letsClientsIn(fmt.Sprintf("ws://127.0.0.1:%d/ros/", port))
	})

	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(2*time.Minute))
	defer cancel()
	d, err := chromium.Start(ctx, t.TempDir(), testwait.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Do("open", map[string]any{"url": fmt.Sprintf("http://127.0.0.1:%d/", port), "name": "ros"}, nil); err != nil {
		t.Fatal(err)
	}
	eval := func(expr string, out any) {
		t.Helper()
		var v struct{ Value any }
		if err := d.Do("eval", map[string]any{"name": "ros", "expr": expr}, &v); err != nil {
			t.Fatal(err)
		}
		switch o := out.(type) {
		case *bool:
			*o, _ = v.Value.(bool)
		case *float64:
			*o, _ = v.Value.(float64)
		case *string:
			*o = fmt.Sprint(v.Value)
		}
	}
	until := func(what, expr string) {
		t.Helper()
		if testwait.Until(wait, func() bool {
			var ok bool
			eval(expr, &ok)
			return ok
		}) {
			return
		}
		var state, console string
		eval("JSON.stringify(window.rosTest)", &state)
		var lines struct{ Lines []string }
		_ = d.Do("console", map[string]any{"name": "ros"}, &lines)
		console = strings.Join(lines.Lines, "\n")
		t.Fatalf("timed out waiting for %s; page state %s\nconsole:\n%s", what, state, console)
	}
	until("roslib to connect", "window.rosTest.connected")
	waitUp(t, "both upstream subscriptions", func() bool {
		a, _ := up.Subscribers("/odom")
		b, _ := up.Subscribers("/scan")
		return a == 1 && b == 1
	})
	for seq := 1; seq <= 3; seq++ {
		_, _ = up.Publish("/odom", map[string]any{"seq": seq})
		_, _ = up.Publish("/scan", map[string]any{"seq": seq, "ranges": []float64{1.5, 2.25}})
	}
	until("three /odom messages in order", "window.rosTest.odom.map(m => m.seq).join() === '1,2,3'")
	until("three /scan messages decoded from CBOR", "window.rosTest.scan.map(m => m.seq).join() === '1,2,3' && window.rosTest.scan[2].ranges[1] === 2.25")

	eval("window.rosTest.topics()", nil)
	until("the rosapi answer", "window.rosTest.calls.length === 1 && window.rosTest.calls[0].ok && window.rosTest.calls[0].v.topics.includes('/odom')")

	eval("window.rosTest.drive(0.4)", nil)
	until("the refusal of /cmd_vel without a safety gate", "window.rosTest.statuses.some(s => s.level === 'error' && s.msg.includes('/cmd_vel refused'))")
	if got := up.Count("publish", "/cmd_vel"); got != 0 {
		t.Fatalf("%d /cmd_vel publishes reached the upstream", got)
	}
	var errs string
	eval("window.rosTest.errors.join('\\n')", &errs)
	if errs != "" {
		t.Fatalf("roslib reported errors: %s", errs)
	}
}
