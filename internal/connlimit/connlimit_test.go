package connlimit

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// server accepts through a limiter of max connections and hands each
// admitted connection over.
func server(t *testing.T, max int) (*Limiter, string, <-chan net.Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(max)
	ln := l.Wrap(raw)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()
	return l, raw.Addr().String(), accepted
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c (a read ends with EOF
// or a reset); the read deadline detects a hang.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server neither closed the connection nor wrote to it")
	}
	return err != nil
}

// speak sends a byte from client c and reads it on its server side s.
func speak(t *testing.T, c, s net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(testwait.Deadline(testwait.Default))
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Time{})
}

// At the cap a newcomer takes the place of the oldest connection that has
// sent nothing; when every connection has spoken it is closed at once.
func TestCapEvictsOldestSilentThenRefuses(t *testing.T) {
	t.Parallel()
	l, addr, accepted := server(t, 3)
	var clients, servers []net.Conn
	for range 3 {
		clients = append(clients, dial(t, addr))
		servers = append(servers, testwait.Recv(t, accepted, "an admitted connection"))
	}
	// The middle one speaks: the oldest silent is the first.
	speak(t, clients[1], servers[1])
	clients = append(clients, dial(t, addr))
	servers = append(servers, testwait.Recv(t, accepted, "the fourth connection"))
	if !closedByServer(t, clients[0]) {
		t.Fatal("the oldest silent connection stayed")
	}
	// Then the third (silent, older than the fourth).
	clients = append(clients, dial(t, addr))
	servers = append(servers, testwait.Recv(t, accepted, "the fifth connection"))
	if !closedByServer(t, clients[2]) {
		t.Fatal("the second oldest silent connection stayed")
	}
	testwait.For(t, "the evicted connections counted out", func() bool {
		st := l.Stats()
		return st.Open == 3 && st.Evicted == 2
	})
	// Everyone open has spoken: the next is refused.
	speak(t, clients[3], servers[3])
	speak(t, clients[4], servers[4])
	refused := dial(t, addr)
	if !closedByServer(t, refused) {
		t.Fatal("a connection beyond the cap was not closed")
	}
	testwait.For(t, "the refusal counted", func() bool { return l.Stats().Refused == 1 })
	if st := l.Stats(); st.Open != 3 || st.Silent != 0 {
		t.Fatalf("stats %+v, want 3 open, none silent", st)
	}
	// A connection that closes makes room.
	servers[1].Close()
	servers[1].Close() // counted out once
	testwait.For(t, "a closed connection counted out", func() bool { return l.Stats().Open == 2 })
	dial(t, addr)
	testwait.Recv(t, accepted, "a connection admitted under the cap")
	if st := l.Stats(); st.Open != 3 || st.Refused != 1 {
		t.Fatalf("stats %+v, want 3 open and the one refusal", st)
	}
}

// No cap: everything is admitted and counted.
func TestNoCap(t *testing.T) {
	t.Parallel()
	l, addr, accepted := server(t, 0)
	for range 20 {
		dial(t, addr)
		testwait.Recv(t, accepted, "an admitted connection")
	}
	if st := l.Stats(); st.Open != 20 || st.Silent != 20 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// An admitted TCP connection still offers its descriptor (the hub's direct
// writes), sendfile and a half close.
func TestTCPConnKeepsItsSocket(t *testing.T) {
	t.Parallel()
	_, addr, accepted := server(t, 10)
	c := dial(t, addr)
	s := testwait.Recv(t, accepted, "an admitted connection")
	if _, ok := s.(syscall.Conn); !ok {
		t.Fatalf("%T does not offer syscall.Conn", s)
	}
	if _, ok := s.(io.ReaderFrom); !ok {
		t.Fatalf("%T does not offer io.ReaderFrom", s)
	}
	cw, ok := s.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T does not offer CloseWrite", s)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the server's half close: %v, want EOF", err)
	}
}

func TestReserve(t *testing.T) {
	t.Parallel()
	for limit, want := range map[int]int{512: 128, 1024: 128, 4096: 512, 1 << 20: 1 << 17} {
		if got := Reserve(limit); got != want {
			t.Errorf("Reserve(%d) = %d, want %d", limit, got, want)
		}
	}
	if n, err := FileLimit(); err != nil || n <= 0 {
		t.Fatalf("FileLimit = %d, %v", n, err)
	}
}
