package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestPlayerRebound is DNS rebinding in Chromium: a page whose name,
// evil.test, resolves to the robot's address (SDR_BROWSER_HOST_RULES maps
// *.test to 127.0.0.1, as a rebound name would) is served by the robot and
// opens /stream/ws on its own origin, so its Origin equals its Host. It
// plays the video; its estop is refused with an ack naming the host and
// SDR_ALLOWED_HOSTS, and nothing reaches NATS. With the name in
// SDR_ALLOWED_HOSTS (the operator's own name for the robot) the page's
// estop reaches NATS.
func TestPlayerRebound(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	startSource(t, ring, "--codec", "jpeg")
	edgePort, natsPort := testenv.FreePort(t), testenv.FreePort(t)
	page := fmt.Sprintf("http://evil.test:%d/", edgePort)
	caddyfile := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
	}
}

http://:%d {
	handle /health {
		respond "OK" 200
	}
	handle /stream/ws {
		sdr_stream {
			source shm %s
			allowed_hosts {$SDR_ALLOWED_HOSTS:}
		}
	}
	handle {
		sdr_player
		respond "Not Found" 404
	}
}
`, natsPort, edgePort, ring)
	start := func(env ...string) *testenv.Caddy {
		t.Helper()
		health := fmt.Sprintf("http://127.0.0.1:%d/health", edgePort)
		return testenv.StartCaddy(t, caddyfile, env, func() error {
			resp, err := http.Get(health)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		})
	}
	c := start()
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	estops := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("command.genesis.estop", estops); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("SDR_BROWSER_HOST_RULES", "MAP *.test 127.0.0.1")
	d := startBrowser(t)
	openPlayer(t, d, "main", page)
	if url := evalJS[string](t, d, "main", `window.sdrPlayer.url`); !strings.HasPrefix(url, fmt.Sprintf("ws://evil.test:%d/", edgePort)) {
		t.Fatalf("the page plays %s, not its own origin's stream", url)
	}
	evalJS[any](t, d, "main", `(window.acks = [], window.sdrPlayer.addEventListener('ack', (e) => window.acks.push(e.detail)), 0)`)
	seq := evalJS[int](t, d, "main", `window.sdrPlayer.command('estop')`)
	var a map[string]any
	testwait.For(t, "the ack of the rebound page's estop", func() bool {
		raw := evalJS[string](t, d, "main", fmt.Sprintf(`JSON.stringify(window.acks.find((a) => a.cmd_seq === %d) || null)`, seq))
		return json.Unmarshal([]byte(raw), &a) == nil && a != nil
	})
	const want = "host evil.test not allowed; add it to SDR_ALLOWED_HOSTS"
	if a["status"] != "rejected" || a["action"] != "estop" || a["detail"] != want {
		t.Fatalf("ack %v, want rejected: %s", a, want)
	}
	select {
	case m := <-estops:
		t.Fatalf("a command of the rebound page reached NATS: %s", m.Data)
	default:
	}
	st := waitFrames(t, d, "main", 30, 10*time.Second)
	if st.Codec != "jpeg" || st.DecodeErrors != 0 {
		t.Errorf("codec %q, decode errors %d (%s)", st.Codec, st.DecodeErrors, st.LastError)
	}

	// The name is the operator's: listed, the page (reconnecting by
	// itself) commands.
	c.Stop(t)
	start("SDR_ALLOWED_HOSTS=evil.test")
	testwait.For(t, "the page to reconnect", func() bool {
		st, err := d.Stats("main")
		return err == nil && st.Connects >= 2 && st.State == "live"
	})
	testwait.Recv(t, reconnected, "the NATS client to reconnect")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seq = evalJS[int](t, d, "main", `window.sdrPlayer.command('estop')`)
	if seq == 0 {
		t.Fatal("the player had no open connection for the command")
	}
	m := testwait.Recv(t, estops, "the estop of the listed host on NATS")
	if !strings.Contains(string(m.Data), fmt.Sprintf(`"cmd_seq":%d`, seq)) {
		t.Fatalf("published %s, want cmd_seq %d", m.Data, seq)
	}
}
