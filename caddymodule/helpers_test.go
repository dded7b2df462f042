package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// localhostOptions is the global options block of the tests that serve
// http://localhost:9080 through caddytest.
const localhostOptions = `
	{
		admin localhost:2999
		http_port 9080
		https_port 9443
		grace_period 1ns
	}
	`

// localhostTester runs Caddy with localhostOptions and the site given.
func localhostTester(t *testing.T, site string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(localhostOptions+site, "caddyfile")
	return tester
}

// unloadOnCleanup loads a config with nothing but the admin endpoint when t
// ends, so that the apps stop and the embedded servers let go of their ports.
func unloadOnCleanup(t *testing.T) {
	t.Cleanup(func() {
		if err := caddy.Load([]byte(`{"admin":{"listen":"localhost:2999"}}`), true); err != nil {
			t.Logf("unloading: %v", err)
		}
	})
}

// adminMetrics returns the metrics page of the admin endpoint.
func adminMetrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(body)
}

// createRing creates a ring of size bytes at path, closed when t ends.
func createRing(t *testing.T, path string, size int64) *shmring.Writer {
	t.Helper()
	w, err := shmring.CreateWriter(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// subscribeChan subscribes nc to subject into a new channel of the size given.
func subscribeChan(t *testing.T, nc *nats.Conn, subject string, size int) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, size)
	if _, err := nc.ChanSubscribe(subject, ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

// startROSBridge starts a rostest rosbridge server, closed when t ends.
func startROSBridge(t *testing.T) *rostest.Server {
	t.Helper()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return up
}

// checkValidation fails t unless err is nil where want is empty, or an
// error containing want otherwise; name says which case it was.
func checkValidation(t *testing.T, name string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %v, want one containing %q", name, err, want)
	}
}

// checkParseError reports whether a parse was meant to fail (want is not
// empty), and stops t unless err is the error meant, or nil where none was.
func checkParseError(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error = %v, want one containing %q", err, want)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
