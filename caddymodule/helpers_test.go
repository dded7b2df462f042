package caddymodule

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
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
//
// The load replaces the admin server and shuts the old one down in the
// background, closing its connections. The next test's caddytest POSTs
// /load over http.DefaultTransport, and a POST is never retried on a pooled
// connection found closed ("connection reset by peer", seen once in a
// clean-clone .ci/run):
// the idle connections to the old admin server are dropped here.
func unloadOnCleanup(t *testing.T) {
	t.Cleanup(func() {
		if err := caddy.Load([]byte(`{"admin":{"listen":"localhost:2999"}}`), true); err != nil {
			t.Logf("unloading: %v", err)
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
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

// metricValue returns the value of one series of the admin endpoint's
// metrics page (series is the name and the labels as the page writes them,
// e.g. caddy_sdr_ros_denials_total{kind="origin"}), or 0 while the page does
// not have it: a counter that was never raised.
func metricValue(t *testing.T, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(adminMetrics(t), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: value %q: %v", series, v, err)
			}
			return f
		}
	}
	return 0
}

// metricsSince returns a function that gives how much a series of the
// admin endpoint's metrics rose since metricsSince was called. Counters
// such as sdr_recorder's keep counting across config loads, so that a test
// sharing the process with others counts from where it started.
func metricsSince(t *testing.T) func(series string) float64 {
	t.Helper()
	base, err := harness.Metrics(http.DefaultClient, "http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return func(series string) float64 {
		t.Helper()
		var b float64
		if v, ok := base[series]; ok {
			if b, err = strconv.ParseFloat(v, 64); err != nil {
				t.Fatalf("metric %s: value %q: %v", series, v, err)
			}
		}
		return metricValue(t, series) - b
	}
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
