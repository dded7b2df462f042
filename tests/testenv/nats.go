package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// StartNATS runs nats-server (v2.15.2 from scripts/deps.sh) on a free
// loopback port until the test ends, and returns its URL once a client can
// connect.
func StartNATS(t testing.TB) string {
	t.Helper()
	return StartNATSOn(t, FreePort(t))
}

// StartNATSOn is StartNATS on a given port.
func StartNATSOn(t testing.TB, port int) string {
	t.Helper()
	cmd := exec.Command(Tool(t, "nats-server"), "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	p := Start(t, fmt.Sprintf("nats-server on port %d", port), cmd, 5*time.Second)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	WaitReady(t, p, testwait.Default, natsAnswers(url))
	return url
}

// natsAnswers is ready once a NATS client can connect to url.
func natsAnswers(url string) harness.Ready {
	return func(context.Context) error {
		nc, err := nats.Connect(url)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	}
}

// ConnectNATS connects to the NATS server at url with opts; the connection
// is closed when the test ends.
func ConnectNATS(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Collect subscribes one channel (256 messages deep) to every subject on
// nc and returns it once the server has the subscriptions.
func Collect(t testing.TB, nc *nats.Conn, subjects ...string) <-chan *nats.Msg {
	t.Helper()
	msgs := make(chan *nats.Msg, 256)
	for _, subj := range subjects {
		if _, err := nc.ChanSubscribe(subj, msgs); err != nil {
			t.Fatalf("subscribing to %s: %v", subj, err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flushing subscriptions: %v", err)
	}
	return msgs
}

// ExpectMsg returns the first message on ch for which ok is true, failing
// the test when none comes within testwait.Timeout(within); what names it.
func ExpectMsg(t testing.TB, ch <-chan *nats.Msg, what string, within time.Duration, ok func(*nats.Msg) bool) *nats.Msg {
	t.Helper()
	deadline := testwait.After(within)
	for {
		select {
		case m := <-ch:
			if ok(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, testwait.Timeout(within))
			return nil
		}
	}
}

// StartNATSProcess runs nats-server with args in its own process group and
// waits up to testwait.Timeout(timeout) until it listens on addr; what names
// it in failures. The caller stops it (Kill: as a crash would); it is
// stopped when the test ends in any case.
func StartNATSProcess(t testing.TB, what, addr string, timeout time.Duration, args ...string) *harness.Process {
	t.Helper()
	p := Start(t, what, exec.Command(Tool(t, "nats-server"), args...), 5*time.Second)
	WaitReady(t, p, timeout, harness.Listening(addr))
	return p
}
