package benchstream

import (
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestLoadRunMeasuresTheWindow runs two clients against gorilla's server,
// which sends each, once the window started, a ping, three video messages
// stamped with the time and a telemetry message: the result counts the
// six video messages and their bytes, no telemetry, and no error.
func TestLoadRunMeasuresTheWindow(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var once sync.Once
	const size = 1 + headerSize + 1000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		<-started
		_ = c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
		for range 3 {
			m := make([]byte, size)
			m[0] = 0x01
			binary.LittleEndian.PutUint64(m[1:9], uint64(time.Now().UnixNano()))
			if err := c.WriteMessage(websocket.BinaryMessage, m); err != nil {
				return
			}
		}
		_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{0x02}, make([]byte, 100)...))
		_, _, _ = c.ReadMessage() // answers the pong; ends when the client goes
	}))
	defer srv.Close()
	l := Load{URLs: []string{"ws" + strings.TrimPrefix(srv.URL, "http")}, Clients: 2, Window: testwait.Timeout(2 * time.Second), FPS: 60}
	var marks []string
	res := l.Run(func(s string) {
		marks = append(marks, s)
		if s == lineStart {
			once.Do(func() { close(started) })
		}
	})
	if strings.Join(marks, " ") != "START END" {
		t.Errorf("marks %q, want START END", marks)
	}
	if res.Errors != 0 || res.Samples != 6 || res.Bytes != 6*size {
		t.Errorf("result %+v: want 6 samples of %d bytes, no errors", res, size)
	}
	if res.P50 < 0 || res.P99 < res.P50 || res.P999 < res.P99 {
		t.Errorf("latencies p50 %g p99 %g p99.9 %g out of order", res.P50, res.P99, res.P999)
	}
}

// TestMeasureReadsTheChild runs a child that prints what a load generator
// prints: start and end run in order, and the result is read back; a
// child without a result, or a start that fails, is an error.
func TestMeasureReadsTheChild(t *testing.T) {
	t.Parallel()
	var calls []string
	mark := func(s string) func() error { return func() error { calls = append(calls, s); return nil } }
	res, err := Measure(exec.Command("sh", "-c", `echo noise; echo START; echo END; echo 'RESULT {"P50":1.5,"P99":2,"Samples":7,"Bytes":9,"Errors":1,"FirstErr":"x"}'`),
		mark("start"), mark("end"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(calls, " ") != "start end" {
		t.Errorf("calls %q, want start end", calls)
	}
	if want := (LoadResult{P50: 1.5, P99: 2, Samples: 7, Bytes: 9, Errors: 1, FirstErr: "x"}); res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if _, err := Measure(exec.Command("sh", "-c", "echo START; echo END"), nil, nil); err == nil {
		t.Error("a child without a result: no error")
	}
	if _, err := Measure(exec.Command("sh", "-c", "echo START; echo END; echo 'RESULT {}'"),
		func() error { return errTest }, nil); !errors.Is(err, errTest) {
		t.Errorf("a failing start: %v, want %v", err, errTest)
	}
}

var errTest = errors.New("test")

// TestRunLoadgenRefusesBadArgs: a load generator without URLs says what
// it needs.
func TestRunLoadgenRefusesBadArgs(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := RunLoadgen([]string{"-clients", "3"}, &out); err == nil || !strings.Contains(err.Error(), "-urls") {
		t.Errorf("RunLoadgen without -urls: %v", err)
	}
	l := Load{URLs: []string{"ws://a/x", "ws://b/y"}, Clients: 3, Warmup: time.Second, Window: 2 * time.Second, FPS: 30}
	fs := l.Args()
	if strings.Join(fs, " ") != "-urls ws://a/x,ws://b/y -clients 3 -warmup 1s -window 2s -fps 30" {
		t.Errorf("Args = %q", fs)
	}
}
