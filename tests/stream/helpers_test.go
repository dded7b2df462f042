// Package stream holds live tests of sdr_stream against the built binary:
// a real ring written by shmring.Writer, real WebSocket clients, real
// nats-server.
package stream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// server is a running binary with one site.
type server struct {
	caddy *testenv.Caddy
	base  string // http://127.0.0.1:port
	ws    string // ws://127.0.0.1:port
	port  int
}

func startServer(t *testing.T, global, body string, env ...string) *server {
	t.Helper()
	port := testenv.FreePort(t)
	s := &server{port: port, base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, testenv.Caddyfile(port, global, body), env, nil)
	return s
}

var plainClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

func (s *server) health(t *testing.T, path string) map[string]any {
	t.Helper()
	resp, err := plainClient.Get(s.base + path)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var h map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("health: %v", err)
	}
	return h
}

func (s *server) waitHealth(t *testing.T, path string, what string, ok func(map[string]any) bool) {
	t.Helper()
	var h map[string]any
	if !testwait.Until(testwait.Default, func() bool { h = s.health(t, path); return ok(h) }) {
		t.Fatalf("timed out waiting for %s: health %v", what, h)
	}
}

// goroutines reads the goroutine count from the admin pprof endpoint.
func (s *server) goroutines(t *testing.T) int {
	t.Helper()
	resp, err := plainClient.Get("http://" + s.caddy.AdminAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("goroutine profile: %v", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	if err != nil {
		t.Fatalf("goroutine profile first line %q", line)
	}
	return n
}

// fds counts the process's open file descriptors.
func (s *server) fds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.caddy.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("listing fds: %v", err)
	}
	return len(ents)
}

// mappings counts the process's mappings of path.
func (s *server) mappings(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", s.caddy.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading maps: %v", err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, " "+path) || strings.HasSuffix(l, " "+path+" (deleted)") {
			n++
		}
	}
	return n
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	return testenv.DialWS(t, url, nil, 30*time.Second)
}
