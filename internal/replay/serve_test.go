package replay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// serverFrame is one frame the server sent, and when it arrived.
type serverFrame struct {
	op   byte
	data []byte
	at   time.Duration // since the client started reading
	err  error
}

// readServerFrame reads one unmasked server frame.
func readServerFrame(r io.Reader) (byte, []byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[0]&0x80 == 0 || hdr[1]&0x80 != 0 {
		return 0, nil, errors.New("not a final unmasked frame")
	}
	n := uint64(hdr[1])
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	data := make([]byte, n)
	_, err := io.ReadFull(r, data)
	return hdr[0] & 0x0f, data, err
}

// client plays the browser on one end of a pipe: it reads every frame the
// server sends into frames, with its arrival time, until the server closes.
type client struct {
	conn   net.Conn
	frames chan serverFrame
}

func newClient(conn net.Conn) *client {
	c := &client{conn: conn, frames: make(chan serverFrame, 1024)}
	start := time.Now()
	go func() {
		defer close(c.frames)
		for {
			op, data, err := readServerFrame(conn)
			c.frames <- serverFrame{op: op, data: data, at: time.Since(start), err: err}
			if err != nil || op == wire.OpClose {
				return
			}
		}
	}()
	return c
}

func (c *client) send(t *testing.T, op byte, payload []byte) {
	t.Helper()
	if _, err := c.conn.Write(wire.AppendClientFrame(nil, op, true, [4]byte{1, 2, 3, 4}, payload)); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

func (c *client) next(t *testing.T) serverFrame {
	t.Helper()
	f, ok := <-c.frames
	if !ok {
		t.Fatal("the server sent nothing more")
	}
	if f.err != nil {
		t.Fatalf("reading from the server: %v", f.err)
	}
	return f
}

// wantClose reads the close frame and checks its code and reason.
func (c *client) wantClose(t *testing.T, code uint16, reason string) {
	t.Helper()
	f := c.next(t)
	if f.op != wire.OpClose || len(f.data) < 2 {
		t.Fatalf("got opcode %#x (%d bytes), want a close frame", f.op, len(f.data))
	}
	if got := binary.BigEndian.Uint16(f.data); got != code || !strings.HasPrefix(string(f.data[2:]), reason) {
		t.Fatalf("closed with %d %q, want %d %q", got, f.data[2:], code, reason)
	}
}

func videoRec(stream string, at time.Time, seq uint64, key bool) recording.Record {
	p := bytes.Repeat([]byte{byte(seq)}, 100+int(seq))
	h := frame.Header{FrameID: uint64(at.UnixNano()), FrameSeq: seq, Size: uint32(len(p)), Codec: frame.CodecH264, CRC32: frame.Checksum(p)}
	if key {
		h.Flags = frame.FlagKeyframe
	}
	return recording.Record{Kind: recording.KindVideo, Time: at, Subject: stream, Seq: seq, Frame: &frame.Frame{Header: h, Payload: p}}
}

func records(recs []recording.Record) ReadFunc {
	return func(ctx context.Context, fn func(recording.Record) error) error {
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// The stream's recorded frames reach the client byte for byte as 0x01
// messages, and telemetry as 0x02, starting at the keyframe before From:
// the lead-in at once, the rest at recorded time / speed. Gate records go
// as telemetry on their subject; other streams' video and commands are not
// sent; the end of the recording closes with 1000.
func TestServeReplaysRecording(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		at := func(d time.Duration) time.Time { return t0.Add(d) }
		recs := []recording.Record{
			videoRec("back", at(-500*ms), 1, true),   // another stream
			videoRec("front", at(-450*ms), 9, false), // a delta before the keyframe
			videoRec("front", at(-300*ms), 10, true),
			videoRec("front", at(-200*ms), 11, false),
			videoRec("front", at(-100*ms), 12, false),
			{Kind: recording.KindTelemetry, Time: at(0), Subject: "telemetry.odom", Data: []byte(`{"x":1}`)},
			videoRec("front", at(40*ms), 13, false),
			{Kind: recording.KindCommand, Time: at(50 * ms), Subject: "front", Data: []byte(`{"action":"set_cmd_vel"}`)},
			{Kind: recording.KindGate, Time: at(60 * ms), Subject: "telemetry.safety.video_gate", Data: []byte(`{"gated":true}`)},
			{Kind: recording.KindTelemetry, Time: at(80 * ms), Subject: "telemetry.odom", Data: []byte(`{"x":2}`)},
			videoRec("front", at(120*ms), 14, false),
			videoRec("back", at(130*ms), 2, false),
			videoRec("front", at(200*ms), 15, true),
		}
		type want struct {
			msg []byte
			at  time.Duration
		}
		video := func(i int, at time.Duration) want {
			f := recs[i].Frame
			return want{wire.AppendVideo(nil, f.Header, f.Payload), at}
		}
		telem := func(i int, at time.Duration) want {
			m, err := wire.Telemetry(recs[i].Subject, recs[i].Data)
			if err != nil {
				t.Fatal(err)
			}
			return want{m, at}
		}
		wants := []want{ // at speed 2
			video(2, 0), video(3, 0), video(4, 0), telem(5, 0),
			video(6, 20*ms), telem(8, 30*ms), telem(9, 40*ms), video(10, 60*ms), video(12, 100*ms),
		}
		srv, cli := net.Pipe()
		c := newClient(cli)
		done := make(chan error, 1)
		var st Stats
		go func() {
			var err error
			st, err = Serve(t.Context(), srv, Config{Stream: "front", Params: Params{From: t0, Speed: 2}}, records(recs))
			done <- err
		}()
		for i, w := range wants {
			f := c.next(t)
			if f.op != wire.OpBinary || !bytes.Equal(f.data, w.msg) {
				t.Fatalf("message %d: opcode %#x, % x..., want % x...", i, f.op, head(f.data), head(w.msg))
			}
			if f.at != w.at {
				t.Fatalf("message %d arrived after %v, want %v", i, f.at, w.at)
			}
		}
		c.wantClose(t, wire.CloseNormal, ReasonEnd)
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if st.Frames != 6 || st.Telemetry != 3 || st.Close != wire.CloseNormal {
			t.Fatalf("stats %+v, want 6 frames, 3 telemetry, close 1000", st)
		}
	})
}

func head(b []byte) []byte { return b[:min(len(b), 12)] }

// hold returns a ReadFunc that hands over recs and then waits for ctx, as
// a long recording would.
func hold(recs ...recording.Record) ReadFunc {
	return func(ctx context.Context, fn func(recording.Record) error) error {
		if err := records(recs)(ctx, fn); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// Every command on a replay connection, estop and malformed ones
// included, is answered with a rejected ack to that client; pings are
// answered; the client's close ends the replay with 1000.
func TestServeRejectsCommands(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		srv, cli := net.Pipe()
		c := newClient(cli)
		done := make(chan error, 1)
		var st Stats
		go func() {
			var err error
			st, err = Serve(t.Context(), srv, Config{Stream: "front", Params: Params{From: t0, Speed: 1}}, hold(videoRec("front", t0, 1, true)))
			done <- err
		}()
		if f := c.next(t); f.data[0] != wire.TypeVideo {
			t.Fatalf("first message of type %#x", f.data[0])
		}
		for _, cmd := range []struct{ body, ack string }{
			{`{"action":"estop","cmd_seq":7}`, `{"action":"estop","cmd_seq":7,"status":"rejected","detail":"replay connection: commands are not accepted"}`},
			{`{"action":"set_cmd_vel","cmd_seq":"x","data":{"linear":1}}`, `{"action":"set_cmd_vel","cmd_seq":null,"status":"rejected","detail":"replay connection: commands are not accepted"}`},
			{`not json`, `{"action":null,"cmd_seq":null,"status":"rejected","detail":"replay connection: commands are not accepted"}`},
			{`{"action":5,"cmd_seq":-2.5}`, `{"action":null,"cmd_seq":-2.5,"status":"rejected","detail":"replay connection: commands are not accepted"}`},
		} {
			c.send(t, wire.OpBinary, append([]byte{wire.TypeCommand}, cmd.body...))
			f := c.next(t)
			subj, payload, err := wire.ParseTelemetry(f.data)
			if err != nil || f.data[0] != wire.TypeTelemetry {
				t.Fatalf("answer to %s: % x (%v), want 0x02", cmd.body, head(f.data), err)
			}
			if subj != "telemetry.command.ack" || string(payload) != cmd.ack {
				t.Fatalf("answer to %s on %s: %s, want %s", cmd.body, subj, payload, cmd.ack)
			}
		}
		c.send(t, wire.OpBinary, []byte{wire.TypeSignaling, '{', '}'}) // ignored
		c.send(t, wire.OpPing, []byte("hi"))
		if f := c.next(t); f.op != wire.OpPong || string(f.data) != "hi" {
			t.Fatalf("answer to ping: opcode %#x %q, want pong \"hi\"", f.op, f.data)
		}
		c.send(t, wire.OpClose, binary.BigEndian.AppendUint16(nil, wire.CloseNormal))
		c.wantClose(t, wire.CloseNormal, "")
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if st.Commands != 4 {
			t.Fatalf("%d commands refused, want 4", st.Commands)
		}
	})
}

// The end of the handler closes with 1012; a recording that cannot be
// read with 1011 and an error; nothing to replay with 1000 saying so.
func TestServeEnds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		read   ReadFunc
		cancel bool
		code   uint16
		reason string
		err    string
	}{
		{name: "reload", read: hold(videoRec("front", t0, 1, true)), cancel: true, code: wire.CloseServiceRestart, reason: "sdr_stream stopped or reloaded"},
		{name: "read error", read: func(context.Context, func(recording.Record) error) error {
			return errors.New("stream not found")
		}, code: CloseInternalError, reason: "replay failed", err: "reading the recording: stream not found"},
		{name: "empty", read: records(nil), code: wire.CloseNormal, reason: "nothing recorded at or after 2026-12-04T02:30:00Z"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				srv, cli := net.Pipe()
				cl := newClient(cli)
				done := make(chan error, 1)
				go func() {
					_, err := Serve(ctx, srv, Config{Stream: "front", Params: Params{From: t0, Speed: 1}}, c.read)
					done <- err
				}()
				if c.cancel {
					cl.next(t) // the first frame: the replay runs
					cancel()
				}
				cl.wantClose(t, c.code, c.reason)
				err := <-done
				if (c.err == "") != (err == nil) || (err != nil && err.Error() != c.err) {
					t.Fatalf("Serve: %v, want %q", err, c.err)
				}
				cancel()
			})
		})
	}
}

// A replay client is pinged every 20 s, as a live one is; a client that
// answered nothing since the last ping is closed with 1001.
func TestServePingsAndClosesSilentClient(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		srv, cli := net.Pipe()
		c := newClient(cli)
		done := make(chan error, 1)
		go func() {
			_, err := Serve(t.Context(), srv, Config{Stream: "front", Params: Params{From: t0, Speed: 1}}, hold(videoRec("front", t0, 1, true)))
			done <- err
		}()
		if f := c.next(t); f.data[0] != wire.TypeVideo {
			t.Fatalf("first message of type %#x", f.data[0])
		}
		for _, at := range []time.Duration{20 * time.Second, 40 * time.Second} {
			f := c.next(t)
			if f.op != wire.OpPing || f.at != at {
				t.Fatalf("opcode %#x after %v, want a ping after %v", f.op, f.at, at)
			}
			if at == 20*time.Second {
				c.send(t, wire.OpPong, nil)
			}
		}
		f := c.next(t)
		if f.op != wire.OpClose || f.at != 60*time.Second || binary.BigEndian.Uint16(f.data) != wire.CloseGoingAway || string(f.data[2:]) != "no pong or message for 20s" {
			t.Fatalf("opcode %#x % x after %v, want close 1001 after 60s", f.op, f.data, f.at)
		}
		if err := <-done; err == nil || err.Error() != "no pong or message for 20s" {
			t.Fatalf("Serve: %v, want the silent client's error", err)
		}
	})
}
