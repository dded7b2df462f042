package rosbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// errNotConnected is returned when a link has no upstream connection now.
var errNotConnected = errors.New("rosbridge upstream not connected")

// link is one WebSocket connection to rosbridge_server that reconnects with
// exponential backoff until its context ends.
type link struct {
	name   string
	url    string
	dialer *websocket.Dialer
	header http.Header
	log    *slog.Logger

	minBackoff, maxBackoff time.Duration
	readLimit              int64

	// guard is held while a fresh connection is installed and up runs, so
	// that state changes made under guard are either restored by up or sent
	// on the new connection, never both and never neither.
	guard sync.Locker
	// up runs under guard right after a connection is installed; it sends
	// what the upstream must know (subscriptions, advertisements). An error
	// drops the connection.
	up func() error
	// down runs (without guard) after a connection was lost.
	down func()
	// onMessage gets every message read, on the link's reader goroutine.
	onMessage func(typ int, data []byte)

	wmu  sync.Mutex // serialises writes
	mu   sync.Mutex
	conn *websocket.Conn
}

const (
	upstreamWriteWait = 5 * time.Second
	upstreamPingEvery = 20 * time.Second
	upstreamReadWait  = 3 * upstreamPingEvery
)

// run dials, serves and redials until ctx ends.
func (l *link) run(ctx context.Context) {
	backoff := l.minBackoff
	failures := 0
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, _, err := l.dialer.DialContext(dctx, l.url, l.header)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// the first failure and every 20th after it: an absent
			// rosbridge_server must not flood the log
			if failures%20 == 0 {
				l.log.Warn("rosbridge upstream dial failed", "link", l.name, "url", l.url, "error", err, "failures", failures+1, "retry_in", backoff)
			}
			failures++
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, l.maxBackoff)
			continue
		}
		failures = 0
		conn.SetReadLimit(l.readLimit)
		served := l.serve(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if served > 5*time.Second {
			backoff = l.minBackoff
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(backoff*2, l.maxBackoff)
	}
}

// serve installs conn, reads from it until it fails and returns how long it
// was up.
func (l *link) serve(ctx context.Context, conn *websocket.Conn) time.Duration {
	start := time.Now()
	l.guard.Lock()
	l.mu.Lock()
	l.conn = conn
	l.mu.Unlock()
	err := l.up()
	l.guard.Unlock()
	if err != nil {
		l.log.Warn("rosbridge upstream restore failed", "link", l.name, "error", err)
	} else {
		l.log.Info("rosbridge upstream connected", "link", l.name, "url", l.url)
	}

	done := make(chan struct{})
	go func() { // ping, and close the connection when ctx ends
		t := time.NewTicker(upstreamPingEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = conn.Close()
				return
			case <-done:
				return
			case <-t.C:
				l.wmu.Lock()
				err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(upstreamWriteWait))
				l.wmu.Unlock()
				if err != nil {
					_ = conn.Close()
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(upstreamReadWait))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(upstreamReadWait))
	})
	for err == nil {
		var typ int
		var data []byte
		typ, data, err = conn.ReadMessage()
		if err != nil {
			break
		}
		_ = conn.SetReadDeadline(time.Now().Add(upstreamReadWait))
		l.onMessage(typ, data)
	}
	close(done)
	l.mu.Lock()
	l.conn = nil
	l.mu.Unlock()
	_ = conn.Close()
	if ctx.Err() == nil {
		l.log.Warn("rosbridge upstream connection lost", "link", l.name, "error", err)
	}
	if l.down != nil {
		l.down()
	}
	return time.Since(start)
}

// connected reports whether the link has a connection now.
func (l *link) connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn != nil
}

// send writes one text message. A write error closes the connection so that
// the reader notices and the link reconnects.
func (l *link) send(b []byte) error {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn == nil {
		return errNotConnected
	}
	l.wmu.Lock()
	_ = conn.SetWriteDeadline(time.Now().Add(upstreamWriteWait))
	err := conn.WriteMessage(websocket.TextMessage, b)
	l.wmu.Unlock()
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("writing to rosbridge upstream %s: %w", l.url, err)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads reconnects over [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}
