package deploy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// upgradeCounter is a WebSocket endpoint that counts the connections made
// to it and holds them open: it stands where rosbridge_server would, only
// to see who dials it (no rosbridge protocol is spoken).
type upgradeCounter struct {
	srv      *httptest.Server
	accepted atomic.Int64
}

func startUpgradeCounter(t *testing.T) *upgradeCounter {
	t.Helper()
	u := &upgradeCounter{}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		u.accepted.Add(1)
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upgradeCounter) url() string { return "ws" + strings.TrimPrefix(u.srv.URL, "http") }

// TestValidateLiveConfig: `caddy validate` and `caddy adapt --validate` of
// the config a running instance runs succeed, and bind and dial nothing.
// The instance runs Caddyfile.example with the embedded nats-server on a
// port it holds (validate used to start a second one there and fail after
// 10 s, "is the port in use?") and an upstream for sdr_ros that counts
// the connections made to it (validate used to dial it).
func TestValidateLiveConfig(t *testing.T) {
	t.Parallel()
	ros := startUpgradeCounter(t)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	e := startExample(t, "SDR_NATS_URL=", "SDR_NATS_EMBEDDED_ADDR="+natsAddr, "SDR_ROS_UPSTREAM="+ros.url())
	// sdr_ros's topic connection and its two service connections.
	testwait.For(t, "the instance's connections to the sdr_ros upstream", func() bool { return ros.accepted.Load() == 3 })
	if code, body, _ := get(t, e.transport+"/health"); code != 200 || !strings.Contains(body, `"nats":"connected"`) {
		t.Fatalf("the instance's health: %d %s", code, body)
	}

	env := cleanEnv(append(e.env, "XDG_CONFIG_HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir())...)
	for _, args := range [][]string{
		{"validate", "--config", "Caddyfile.example", "--adapter", "caddyfile"},
		{"adapt", "--validate", "--config", "Caddyfile.example", "--adapter", "caddyfile"},
	} {
		out, err := runCaddy(t, env, "", args...)
		if err != nil {
			t.Errorf("caddy %s while the same config runs: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Nothing the validations provisioned dialed sdr_ros's upstream. The
	// running instance's own connections are the only ones made; a new one
	// would have been made while validate ran.
	if n := ros.accepted.Load(); n != 3 {
		t.Errorf("%d connections to the sdr_ros upstream, want the running instance's 3", n)
	}
	// The instance is unharmed.
	if code, body, _ := get(t, e.transport+"/health"); code != 200 || !strings.Contains(body, `"nats":"connected"`) {
		t.Errorf("the instance's health after the validations: %d %s", code, body)
	}
}
