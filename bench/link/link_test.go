package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// Bytes cross the shaped TCP link whole and in order, losses included, and
// no sooner than the link's rate and delay allow.
func TestLinkToxicCarriesBytesAtTheRate(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	l := Link{Rate: 8e6, Delay: 10 * time.Millisecond, Loss: 0.05, Queue: 50 * time.Millisecond}
	p, err := newShaper(l).proxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	want := make([]byte, 200_000)
	for i := range want {
		want[i] = byte(rand.IntN(256))
	}
	c, err := net.Dial("tcp", p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b := testwait.Recv(t, got, "the bytes through the link")
	if !bytes.Equal(b, want) {
		t.Fatalf("got %d bytes, not the %d sent in order", len(b), len(want))
	}
	if floor := l.serialize(len(want)) + l.Delay; time.Since(start) < floor {
		t.Errorf("%d bytes crossed in %v, faster than the link's %v", len(want), time.Since(start), floor)
	}
}

// The shaped UDP socket delays what it receives by the link's delay, keeps
// the order, and drops everything at a loss of 1.
func TestShapedConn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		loss float64
		want int
	}{{"no loss", 0, 10}, {"all lost", 1, 0}} {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		l := Link{Rate: 80e6, Delay: 20 * time.Millisecond, Loss: tc.loss, Queue: 100 * time.Millisecond}
		sc := shape(rx, l)
		tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		for i := range 10 {
			if _, err := tx.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		type dgram struct {
			b  byte
			at time.Time
		}
		recv := make(chan dgram, 16)
		go func() {
			buf := make([]byte, 100)
			for {
				n, _, err := sc.ReadFrom(buf)
				if err != nil || n != 1 {
					return
				}
				recv <- dgram{buf[0], time.Now()}
			}
		}()
		for i := range tc.want {
			d := testwait.Recv(t, recv, "a datagram")
			if int(d.b) != i {
				t.Fatalf("%s: datagram %d, want %d", tc.name, d.b, i)
			}
			if d.at.Sub(sent) < l.Delay {
				t.Errorf("%s: datagram %d came after %v, sooner than the link's delay", tc.name, i, d.at.Sub(sent))
			}
		}
		testwait.For(t, "all 10 datagrams admitted or lost", func() bool {
			return sc.down.passed.Load()+sc.down.lost.Load()+sc.down.dropped.Load() == 10
		})
		if got := sc.down.passed.Load(); got != int64(tc.want) {
			t.Errorf("%s: %d passed, want %d", tc.name, got, tc.want)
		}
		sc.Close()
		tx.Close()
	}
}
