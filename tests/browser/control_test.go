package browser

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestPlayerControlLease: two demo pages on a server with the control lease
// on. Each shows the Control section (hidden without a lease) and the
// player's control badge: nobody has control; page A takes it and shows
// "you have control" with a Release button, page B shows A's id as the
// holder; B's driving is listed as rejected "not the controller" while its
// E-STOP reaches NATS; A's driving reaches NATS; A releases and B takes.
func TestPlayerControlLease(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	startSource(t, ring)
	e := &edge{HTTPPort: testenv.FreePort(t), NATSPort: testenv.FreePort(t), Ring: ring}
	e.caddyfile = strings.Replace(edgeCaddyfile(e.HTTPPort, e.NATSPort, "shm "+ring),
		"\tsdr_nats {\n", "\tsdr_nats {\n\t\tcontrol {\n\t\t\tlease on\n\t\t}\n", 1)
	if !strings.Contains(e.caddyfile, "lease on") {
		t.Fatalf("no control block in\n%s", e.caddyfile)
	}
	e.start(t)
	nc, err := nats.Connect(e.NATSURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cmds := testenv.Collect(t, nc, "command.genesis.>")

	d := startBrowser(t)
	openPlayer(t, d, "a", e.URL())
	openPlayer(t, d, "b", e.URL())
	text := func(page, selector string) string {
		return evalJS[string](t, d, page, `(document.querySelector('`+selector+`') || {}).textContent || ''`)
	}
	waitText := func(page, selector, want string) {
		t.Helper()
		if !testwait.Until(10*time.Second, func() bool { return text(page, selector) == want }) {
			t.Fatalf("page %s: %s shows %q, want %q", page, selector, text(page, selector), want)
		}
	}
	visible := func(page, selector string) bool {
		return evalJS[bool](t, d, page, `(() => { const e = document.querySelector('`+selector+`'); return !!e && e.offsetParent !== null; })()`)
	}
	click := func(page, selector string) {
		t.Helper()
		evalJS[any](t, d, page, `document.querySelector('`+selector+`').click()`)
	}
	drive := func(page string) {
		t.Helper()
		if err := d.Do("down", map[string]any{"name": page, "key": "KeyW"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Do("up", map[string]any{"name": page, "key": "KeyW"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	nextCommand := func(what, action string) {
		t.Helper()
		testenv.ExpectMsg(t, cmds, what, 10*time.Second, func(m *nats.Msg) bool { return m.Subject == "command.genesis."+action })
	}

	for _, p := range []string{"a", "b"} {
		waitText(p, "#control .sdr-control-status", "viewer · nobody has control")
		waitText(p, ".sdr-control", "viewer · nobody has control")
		if !visible(p, "#control .take-control") || visible(p, "#control .release-control") {
			t.Errorf("page %s: Take visible %v, Release visible %v; want Take only", p,
				visible(p, "#control .take-control"), visible(p, "#control .release-control"))
		}
	}
	click("a", "#control .take-control")
	waitText("a", "#control .sdr-control-status", "you have control")
	waitText("a", ".sdr-control", "you have control")
	if visible("a", "#control .take-control") || !visible("a", "#control .release-control") {
		t.Error("page a holds control: want Release, not Take")
	}
	aID := evalJS[string](t, d, "a", `window.sdrPlayer.control.you`)
	bID := evalJS[string](t, d, "b", `window.sdrPlayer.control.you`)
	if aID == "" || aID == bID {
		t.Fatalf("connection ids %q and %q", aID, bID)
	}
	waitText("b", "#control .sdr-control-status", "viewer · "+aID+" has control")

	// B, a viewer: driving rejected and listed; its E-STOP goes out.
	drive("b")
	var rejected string
	testwait.Until(10*time.Second, func() bool {
		rejected = text("b", ".sdr-command-log li.rejected")
		return rejected != ""
	})
	if !strings.Contains(rejected, "set_cmd_vel: rejected · not the controller") {
		t.Errorf("page b lists %q, want set_cmd_vel rejected as not the controller", rejected)
	}
	click("b", "#estop")
	nextCommand("page b's estop", "estop")
	// A drives.
	drive("a")
	m := testenv.ExpectMsg(t, cmds, "page a's set_cmd_vel", 10*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "command.genesis.set_cmd_vel"
	})
	var v struct {
		Data struct {
			LinearX float64 `json:"linear_x"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &v); err != nil || v.Data.LinearX <= 0 {
		t.Errorf("page a's driving sent %s", m.Data)
	}
	screenshot(t, d, "b", "player-control-viewer.png")

	click("a", "#control .release-control")
	waitText("b", "#control .sdr-control-status", "viewer · nobody has control")
	click("b", "#control .take-control")
	waitText("b", ".sdr-control", "you have control")
	waitText("a", "#control .sdr-control-status", "viewer · "+bID+" has control")
	screenshot(t, d, "b", "player-control-holder.png")
}
