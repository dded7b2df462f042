// Package sdrstart is the sdr_start app: it starts what the sdr_* handlers
// connect to the outside (ring readers, the rosbridge connection, WebRTC
// sockets) when Caddy runs their config, and never for `caddy validate`.
//
// Caddy provisions every module of a config for `caddy validate` and
// `caddy adapt --validate`, but starts no app, and a handler has no Start of
// its own. So a handler takes its resources in Provision without opening
// anything, and hands what must listen, dial or attach to this app
// (OnStart); Caddy starts the app with the config's other apps. The app is
// never configured: the handlers load it through ctx.App.
package sdrstart

import (
	"context"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(new(App))
}

// ID is the app's module ID.
const ID = "sdr_start"

// App is the `sdr_start` app. It has no settings: each config's handlers
// register their start functions with it at Provision, and Caddy's Start of
// the app runs them, in the order they were registered.
type App struct {
	mu      sync.Mutex
	starts  []start
	started bool
	err     error         // the first start function's error
	done    chan struct{} // closed when Start has run
}

type start struct {
	what string
	fn   func() error
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  ID,
		New: func() caddy.Module { return &App{done: make(chan struct{})} },
	}
}

// Of returns the sdr_start app of the config ctx belongs to, loading it on
// first use.
func Of(ctx caddy.Context) (*App, error) {
	v, err := ctx.App(ID)
	if err != nil {
		return nil, fmt.Errorf("loading the %s app: %w", ID, err)
	}
	a, ok := v.(*App)
	if !ok {
		return nil, fmt.Errorf("app %s is %T, not *sdrstart.App", ID, v)
	}
	return a, nil
}

// OnStart registers fn to run when Caddy starts the config; what names it in
// errors ("sdr_stream front: ring /dev/shm/..."). Registered after the app
// started, fn runs at once. fn must be safe to call for a resource that a
// previous config started already (a shared ring reader on a reload): it
// starts the resource once and does nothing the next times.
func (a *App) OnStart(what string, fn func() error) error {
	a.mu.Lock()
	if !a.started {
		a.starts = append(a.starts, start{what, fn})
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Start implements caddy.App: it runs the registered start functions, in
// order, and stops at the first that fails (Caddy then stops the config and
// every module's Cleanup releases what it took).
func (a *App) Start() error {
	a.mu.Lock()
	starts := a.starts
	a.starts = nil
	a.started = true
	a.mu.Unlock()
	var err error
	for _, s := range starts {
		if err = s.fn(); err != nil {
			err = fmt.Errorf("%s: %w", s.what, err)
			break
		}
	}
	a.err = err
	close(a.done)
	return err
}

// Wait blocks until Start has run, or ctx ends. Caddy starts the apps of a
// config one after the other, in no set order: the http app may serve a
// request a moment before this app has started what the handler needs (the
// NATS connection, the ring reader), and the handler waits for it here. It
// returns nil once everything started, or why not.
func (a *App) Wait(ctx context.Context) error {
	select {
	case <-a.done:
		return a.err
	default:
	}
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop implements caddy.App. What was started is shared across config
// reloads and released by the Cleanup of the modules that took it.
func (a *App) Stop() error { return nil }

// Interface guards
var _ caddy.App = (*App)(nil)
