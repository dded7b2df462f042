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

// TestPlayerFromAnotherOrigin is a page served from another origin (another
// host name and port, as an app on :80 beside the transport on :8080 of a
// different host, or a development server) that opens /stream/ws in
// Chromium: the old transport-server accepted any Origin, so the page sees
// video. Its commands are refused with an ack that names
// SDR_ALLOWED_ORIGINS; with the page's origin in SDR_ALLOWED_ORIGINS they
// reach NATS (the embedded nats-server).
//
// Chromium resolves *.test to 127.0.0.1 (SDR_BROWSER_HOST_RULES, read by
// tests/node/browser/driver.mjs): the page is http://app.test:<app>/, the
// stream ws://robot.test:<edge>/.
// A plain-HTTP page of such a host gets no WebCodecs, so the picture is
// JPEG.
func TestPlayerFromAnotherOrigin(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	startSource(t, ring, "--codec", "jpeg")
	edgePort, appPort, natsPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	page := fmt.Sprintf("http://app.test:%d", appPort)
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
			allowed_origins {$SDR_ALLOWED_ORIGINS:}
			# The robot's own name (a site name in production): the
			# subject here is the Origin.
			allowed_hosts robot.test
		}
	}
}

http://:%d {
	handle {
		sdr_player {
			stream_url ws://robot.test:%d/stream/ws
		}
		respond "Not Found" 404
	}
}
`, natsPort, edgePort, ring, appPort, edgePort)
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
	c := start("SDR_ALLOWED_ORIGINS=https://elsewhere.example")
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
	openPlayer(t, d, "main", page+"/")
	if url := evalJS[string](t, d, "main", `window.sdrPlayer.url`); url != fmt.Sprintf("ws://robot.test:%d/stream/ws", edgePort) {
		t.Fatalf("the page plays %s, not the other origin's stream", url)
	}
	evalJS[any](t, d, "main", `(window.acks = [], window.sdrPlayer.addEventListener('ack', (e) => window.acks.push(e.detail)), 0)`)
	ack := func(seq int) map[string]any {
		t.Helper()
		var a map[string]any
		testwait.For(t, fmt.Sprintf("the ack of command %d in the page", seq), func() bool {
			raw := evalJS[string](t, d, "main", fmt.Sprintf(`JSON.stringify(window.acks.find((a) => a.cmd_seq === %d) || null)`, seq))
			return json.Unmarshal([]byte(raw), &a) == nil && a != nil
		})
		return a
	}

	seq := evalJS[int](t, d, "main", `window.sdrPlayer.command('estop')`)
	a := ack(seq)
	want := "origin " + page + " not allowed; add it to SDR_ALLOWED_ORIGINS"
	if a["status"] != "rejected" || a["action"] != "estop" || a["detail"] != want {
		t.Fatalf("ack %v, want rejected: %s", a, want)
	}
	// The ack is the relay's answer instead of a publish.
	select {
	case m := <-estops:
		t.Fatalf("a command of an untrusted page reached NATS: %s", m.Data)
	default:
	}
	st := waitFrames(t, d, "main", 30, 10*time.Second)
	if st.Codec != "jpeg" || st.DecodeErrors != 0 {
		t.Errorf("codec %q, decode errors %d (%s)", st.Codec, st.DecodeErrors, st.LastError)
	}

	// The operator lists the page's origin; the page reconnects by itself.
	c.Stop(t)
	start("SDR_ALLOWED_ORIGINS=https://elsewhere.example " + page)
	testwait.For(t, "the page to reconnect", func() bool {
		st, err := d.Stats("main")
		return err == nil && st.Connects >= 2 && st.State == "live"
	})
	// The embedded server is new too: our subscription is on it once the
	// client has reconnected and made a round trip.
	testwait.Recv(t, reconnected, "the NATS client to reconnect")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seq = evalJS[int](t, d, "main", `window.sdrPlayer.command('estop')`)
	if seq == 0 {
		t.Fatal("the player had no open connection for the command")
	}
	m := testwait.Recv(t, estops, "the estop of the listed page on NATS")
	if !strings.Contains(string(m.Data), fmt.Sprintf(`"cmd_seq":%d`, seq)) {
		t.Fatalf("published %s, want cmd_seq %d", m.Data, seq)
	}
	if raw := evalJS[string](t, d, "main", fmt.Sprintf(`JSON.stringify(window.acks.filter((a) => a.cmd_seq === %d))`, seq)); raw != "[]" {
		t.Fatalf("the listed page's estop was answered: %s", raw)
	}
	waitFrames(t, d, "main", st.FramesDecoded+30, 10*time.Second)
	screenshot(t, d, "main", "player-other-origin.png")
}
