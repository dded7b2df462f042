package wire

// Limits on what one WebSocket client may send, applied below any framing
// code (ours on /stream/ws, gorilla/websocket's on /nats/ws and /ros/): a
// reader between the socket and the framing watches the frame headers go
// by, and fails the read once the client sends a message in too many
// fragments or frames faster than a token bucket allows. A message in
// endlessly many empty fragments otherwise holds a core without ever
// reaching a size limit.

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// ClosePolicyViolation is the close code for a client over a frame limit.
const ClosePolicyViolation uint16 = 1008

// Frame limit defaults. A browser sends every message in one frame, and the
// SDR_OS client at most some 60 commands a second besides its pongs; a
// roslibjs page a few dozen subscribe ops when it loads. The defaults are
// far above that and far below a flood (a loop sends hundreds of thousands
// of empty frames a second).
const (
	DefaultMaxFragments = 64
	DefaultFrameRate    = 500  // frames per second, sustained
	DefaultFrameBurst   = 1000 // frames at once
)

// FrameLimits bound the frames one client sends. Zero fields take the
// defaults.
type FrameLimits struct {
	// MaxFragments is the most frames one message may come in; beyond it
	// the client is closed with 1009.
	MaxFragments int
	// Rate is the frames per second a client may send, sustained, control
	// frames included; beyond it, once Burst is used up, the client is
	// closed with 1008. Negative: no limit.
	Rate float64
	// Burst is the frames a client may send at once.
	Burst int
}

func (l FrameLimits) filled() FrameLimits {
	if l.MaxFragments <= 0 {
		l.MaxFragments = DefaultMaxFragments
	}
	if l.Rate == 0 {
		l.Rate = DefaultFrameRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultFrameBurst
	}
	return l
}

// Reasons a LimitError gives, for metrics.
const (
	ReasonFragments = "fragments"
	ReasonFrameRate = "frame_rate"
)

// LimitError is a client over a frame limit: a ProtocolError with the
// close code to answer, and the limit's name.
type LimitError struct {
	ProtocolError
	// Reason is ReasonFragments or ReasonFrameRate.
	Reason string
}

func (e *LimitError) Unwrap() error { return &e.ProtocolError }

// FrameGuard applies FrameLimits to one client and notes when the client
// last sent anything. Frame is called by one goroutine (the reader);
// Active may be called from any.
type FrameGuard struct {
	lim    FrameLimits
	start  time.Time
	tokens float64
	last   time.Duration // of the last refill, since start
	frags  int           // frames of the message in progress
	active atomic.Int64  // when bytes last came, since start (ns)
}

// NewFrameGuard returns a guard with full bucket.
func NewFrameGuard(l FrameLimits) *FrameGuard {
	l = l.filled()
	return &FrameGuard{lim: l, start: time.Now(), tokens: float64(l.Burst)}
}

// Frame notes one frame header from the client: its opcode and FIN bit.
// It returns a *LimitError when the frame is over a limit.
func (g *FrameGuard) Frame(op byte, fin bool) error {
	if g.lim.Rate > 0 {
		now := time.Since(g.start)
		g.tokens = min(float64(g.lim.Burst), g.tokens+(now-g.last).Seconds()*g.lim.Rate)
		g.last = now
		if g.tokens < 1 {
			return &LimitError{ProtocolError{ClosePolicyViolation,
				fmt.Sprintf("more than %d frames at once or %g a second", g.lim.Burst, g.lim.Rate)}, ReasonFrameRate}
		}
		g.tokens--
	}
	if op >= 0x8 {
		return nil // control frames may come between fragments
	}
	if op != OpContinuation {
		g.frags = 0
	}
	g.frags++
	if g.frags > g.lim.MaxFragments {
		return &LimitError{ProtocolError{CloseMessageTooBig,
			fmt.Sprintf("message in more than %d fragments", g.lim.MaxFragments)}, ReasonFragments}
	}
	if fin {
		g.frags = 0
	}
	return nil
}

// touch notes that bytes came from the client.
func (g *FrameGuard) touch() { g.active.Store(int64(time.Since(g.start))) }

// SilentSince reports whether the client has sent nothing since t (a time
// taken after the guard was made).
func (g *FrameGuard) SilentSince(t time.Time) bool {
	return time.Duration(g.active.Load()) < t.Sub(g.start)
}

// GuardReader returns a reader of r, the bytes a client sends, that hands
// every frame header to g and fails (with g's *LimitError, from then on)
// at the first frame over a limit.
func GuardReader(r io.Reader, g *FrameGuard) io.Reader {
	return &guardReader{r: r, g: g}
}

// GuardConn returns conn with its reads going through GuardReader.
func GuardConn(conn net.Conn, g *FrameGuard) net.Conn {
	return &guardConn{Conn: conn, r: GuardReader(conn, g)}
}

type guardConn struct {
	net.Conn
	r io.Reader
}

func (c *guardConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// guardReader parses the frame headers in the byte stream: header bytes one
// at a time, payloads skipped whole.
type guardReader struct {
	r       io.Reader
	g       *FrameGuard
	hdr     [14]byte
	hn      int    // header bytes collected
	payload uint64 // payload bytes to skip before the next header
	err     error
}

func (gr *guardReader) Read(p []byte) (int, error) {
	if gr.err != nil {
		return 0, gr.err
	}
	n, err := gr.r.Read(p)
	if n > 0 {
		gr.g.touch()
		if ferr := gr.scan(p[:n]); ferr != nil {
			gr.err = ferr
			return 0, ferr
		}
	}
	return n, err
}

func (gr *guardReader) scan(b []byte) error {
	for len(b) > 0 {
		if gr.payload > 0 {
			k := min(uint64(len(b)), gr.payload)
			gr.payload -= k
			b = b[k:]
			continue
		}
		gr.hdr[gr.hn] = b[0]
		gr.hn++
		b = b[1:]
		if gr.hn < 2 {
			continue
		}
		need, n := 2, uint64(gr.hdr[1]&0x7f)
		switch n {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if gr.hdr[1]&0x80 != 0 {
			need += 4 // the mask
		}
		if gr.hn < need {
			continue
		}
		switch n {
		case 126:
			n = uint64(gr.hdr[2])<<8 | uint64(gr.hdr[3])
		case 127:
			n = 0
			for _, c := range gr.hdr[2:10] {
				n = n<<8 | uint64(c)
			}
		}
		gr.hn, gr.payload = 0, n
		if err := gr.g.Frame(gr.hdr[0]&0x0f, gr.hdr[0]&0x80 != 0); err != nil {
			return err
		}
	}
	return nil
}
