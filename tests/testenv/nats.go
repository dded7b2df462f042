package testenv

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nats-server on port %d: %v", port, err)
	}
	exited := StopOnCleanup(t, cmd, 5*time.Second, nil)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var err error
	gone := false
	testwait.Until(testwait.Default, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		var nc *nats.Conn
		if nc, err = nats.Connect(url); err != nil {
			return false
		}
		nc.Close()
		return true
	})
	switch {
	case gone:
		t.Fatalf("nats-server on %s exited before it was ready", url)
	case err != nil:
		t.Fatalf("nats-server on %s not ready after %s: %v", url, testwait.Timeout(testwait.Default), err)
	}
	return url
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
// it in failures.
// The caller stops it with KillGroup.
func StartNATSProcess(t testing.TB, what, addr string, timeout time.Duration, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(Tool(t, "nats-server"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	ready := false
	defer func() {
		if !ready {
			KillGroup(cmd)
		}
	}()
	WaitListening(t, what, addr, timeout)
	ready = true
	return cmd
}

// StopOnCleanup waits for the started cmd in the background and returns a
// channel closed when it has exited. When the test ends it sends cmd
// SIGTERM, kills it (and its process group, for a Setpgid child) after
// testwait.Timeout(grace), waits, and then runs after, if not nil.
func StopOnCleanup(t testing.TB, cmd *exec.Cmd, grace time.Duration, after func()) <-chan struct{} {
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-testwait.After(grace):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
			<-exited
		}
		if after != nil {
			after()
		}
	})
	return exited
}

// KillGroup kills the process group of cmd at once, as a crash would, and
// waits for cmd to exit.
func KillGroup(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}
