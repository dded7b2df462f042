package hub

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// BenchmarkFraming compares the two ways of sending one frame to many
// clients that sdr_stream could use: gorilla's PreparedMessage (framed once,
// one WritePreparedMessage per client) and the hub's own framing (framed
// once, the same bytes written to each client's socket). Both send over
// loopback to 32 clients draining their sockets; ns/op is per frame to all
// clients, CPU of both ends included.
//
//	go test ./internal/hub -run '^$' -bench Framing -benchmem
func BenchmarkFraming(b *testing.B) {
	const clients = 32
	msg := wire.AppendVideo(nil, mkFrame(1, false, 15000).Header, make([]byte, 15000))
	for _, mode := range []string{"prepared", "own"} {
		b.Run(mode, func(b *testing.B) {
			conns := make(chan net.Conn, clients)
			wsConns := make(chan *websocket.Conn, clients)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if mode == "own" {
					c, err := Upgrade(w, r)
					if err == nil {
						conns <- c
					}
					return
				}
				u := websocket.Upgrader{}
				c, err := u.Upgrade(w, r, nil)
				if err == nil {
					wsConns <- c
				}
			}))
			defer srv.Close()
			var wg sync.WaitGroup
			url := "ws" + strings.TrimPrefix(srv.URL, "http")
			for range clients {
				c, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() { // drain cheaply
					defer wg.Done()
					_, _ = io.Copy(io.Discard, bufio.NewReaderSize(c.NetConn(), 32<<10))
				}()
				defer c.Close()
			}
			var own []net.Conn
			var prep []*websocket.Conn
			for range clients {
				if mode == "own" {
					own = append(own, <-conns)
				} else {
					prep = append(prep, <-wsConns)
				}
			}
			b.SetBytes(int64(len(msg) * clients))
			b.ResetTimer()
			for range b.N {
				if mode == "own" {
					f := wire.AppendBinaryFrame(make([]byte, 0, len(msg)+10), msg)
					for _, c := range own {
						if _, err := c.Write(f); err != nil {
							b.Fatal(err)
						}
					}
					continue
				}
				pm, err := websocket.NewPreparedMessage(websocket.BinaryMessage, msg)
				if err != nil {
					b.Fatal(err)
				}
				for _, c := range prep {
					if err := c.WritePreparedMessage(pm); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			for _, c := range own {
				c.Close()
			}
			for _, c := range prep {
				c.Close()
			}
			wg.Wait()
		})
	}
}
