package testenv

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nats-server on port %d: %v", port, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			return url
		}
		select {
		case <-exited:
			t.Fatalf("nats-server on %s exited before it was ready", url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server on %s not ready after 15s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
