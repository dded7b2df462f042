// Package moduletest holds the checks that the tests of several module
// packages share. Only tests import it.
package moduletest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// CheckError fails t unless err is nil where want is empty, or an error
// containing want otherwise; name says which case it was. The test goes on.
func CheckError(t testing.TB, name string, err error, want string) {
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

// ParseFailed reports whether a parse was meant to fail (want is not
// empty), and stops t unless err is the error meant, or nil where none was.
func ParseFailed(t testing.TB, err error, want string) bool {
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

// CreateRing creates a ring of size bytes at path, closed when t ends.
func CreateRing(t testing.TB, path string, size int64) *shmring.Writer {
	t.Helper()
	w, err := shmring.CreateWriter(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// provisionMu serializes caddy.ProvisionContext, which sets a package
// variable of certmagic's (certmagic.Default.Storage) on every call: the
// race detector finds parallel tests writing it together.
var provisionMu sync.Mutex

// Context returns a Caddy context with an empty config of its own, as a
// config load gives its modules: apps load through it (ctx.App), and
// cancel cleans up every module provisioned in it. Nothing is started, as
// for caddy validate; Start starts what the handlers registered.
func Context(t testing.TB) (caddy.Context, context.CancelFunc) {
	t.Helper()
	provisionMu.Lock()
	base, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
	provisionMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return caddy.NewContext(base)
}

// Start runs the sdr_start app of ctx, as Caddy does when it starts the
// config: the handlers' ring readers, upstream connections and sockets.
func Start(ctx caddy.Context) error {
	a, err := sdrstart.Of(ctx)
	if err != nil {
		return err
	}
	return a.Start()
}
