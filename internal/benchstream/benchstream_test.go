package benchstream

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

func TestAccessUnitCarriesItsSendTime(t *testing.T) {
	t.Parallel()
	sent := time.Unix(1_790_000_000, 123_456_789)
	for _, tc := range []struct {
		size int
		nal  byte
	}{{100_000, NALIDR}, {15_000, NALSlice}, {3, NALSlice}} {
		au := AccessUnit(tc.size, tc.nal, sent)
		if got, ok := SentAt(au); !ok || !got.Equal(sent) {
			t.Errorf("size %d: SentAt = %v, %v; want %v", tc.size, got, ok, sent)
		}
		if got := NALType(au); got != int(tc.nal) {
			t.Errorf("size %d: NALType = %d, want %d", tc.size, got, tc.nal)
		}
		if n := bytes.Count(au, []byte{0, 0, 1}); n != 1 {
			t.Errorf("size %d: %d start codes, want one NAL unit", tc.size, n)
		}
		// As a WebRTC depacketizer hands it out: a three-byte start code.
		if got, ok := SentAt(au[1:]); !ok || !got.Equal(sent) {
			t.Errorf("size %d: SentAt after a 3-byte start code = %v, %v", tc.size, got, ok)
		}
	}
	if _, ok := SentAt([]byte{0, 0, 1, 0x65, 'z'}); ok {
		t.Error("SentAt of a short unit reported a time")
	}
	if NALType([]byte{1, 2, 3}) != -1 {
		t.Error("NALType without a start code is not -1")
	}
}

// TestDialReadAndPong runs the raw client against gorilla's server: the
// handshake, a binary message of each length encoding, and a ping answered
// with a pong the server accepts.
func TestDialReadAndPong(t *testing.T) {
	t.Parallel()
	pong := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPongHandler(func(data string) error { pong <- data; return nil })
		for _, n := range []int{100, 1000, 70_000} {
			if err := c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{byte(n)}, n)); err != nil {
				return
			}
		}
		_ = c.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second))
		_, _, _ = c.ReadMessage() // runs the pong handler; ends when the client goes
	}))
	defer srv.Close()
	conn, br, err := Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/x", testwait.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, want := range []int{100, 1000, 70_000} {
		op, n, err := ReadFrameHeader(br)
		if err != nil || op != OpBinary || n != uint64(want) {
			t.Fatalf("frame: op %d, %d bytes, %v; want binary of %d", op, n, err, want)
		}
		if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
			t.Fatal(err)
		}
	}
	op, n, err := ReadFrameHeader(br)
	if err != nil || op != OpPing {
		t.Fatalf("frame: op %d, %v; want a ping", op, err)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(br, data); err != nil {
		t.Fatal(err)
	}
	if err := Pong(conn, data); err != nil {
		t.Fatal(err)
	}
	if got := testwait.Recv(t, pong, "the pong"); got != "hi" {
		t.Errorf("server got pong %q, want %q", got, "hi")
	}
	if err := Pong(io.Discard, make([]byte, 126)); err == nil {
		t.Error("Pong took a 126-byte payload")
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, _, err := Dial("ws"+strings.TrimPrefix(srv.URL, "http"), testwait.Timeout(10*time.Second)); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Dial of a 404 = %v, want an error naming the status", err)
	}
}
