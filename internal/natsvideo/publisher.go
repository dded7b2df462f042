package natsvideo

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// DefaultPublishQueue is how many frames may wait for the publisher's
// sender before new ones are dropped.
const DefaultPublishQueue = 64

// PublisherConfig sets up a Publisher. Zero fields take the defaults.
type PublisherConfig struct {
	// Subject is the video subject; required.
	Subject string
	// Queue is how many frames may wait to be published; a frame that finds
	// the queue full is dropped (and edges see the gap).
	Queue int
	// IDRCoalesce is the shortest interval between two keyframe requests
	// passed to Requester, whatever the number of edges asking.
	IDRCoalesce time.Duration
	// Requester receives the edges' keyframe requests, coalesced. Nil
	// publishes ForceIDRSubject on the connection (the simulator and
	// sdr_encoder listen there).
	Requester frame.KeyframeRequester
	// Logger receives the publisher's logs; nil discards them.
	Logger *slog.Logger
}

// PublisherStats are a Publisher's counters.
type PublisherStats struct {
	Frames              uint64 // frames published
	Bytes               uint64 // payload bytes published
	SplitFrames         uint64 // frames larger than max_payload, sent in parts
	Parts               uint64 // messages carrying parts of split frames
	DroppedQueue        uint64 // frames dropped because the sender fell behind
	DroppedDisconnected uint64 // frames dropped while NATS was disconnected
	Errors              uint64 // frames the client library refused
	IDRReceived         uint64 // keyframe requests received from edges
	IDRForwarded        uint64 // keyframe requests passed on, after coalescing
	Held                uint64 // checks that found the source holding frames back (each asks for a keyframe)
}

// Publisher puts every frame of a frame.Source on a NATS subject and passes
// the edges' keyframe requests to the producer.
type Publisher struct {
	nc   *nats.Conn
	src  frame.Source
	cfg  PublisherConfig
	log  *slog.Logger
	ch   chan frame.Frame
	idr  *keyreq.Coalescer
	sub  *nats.Subscription
	stop func()

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	// Only the sender goroutine touches these.
	published   bool
	lastSeq     uint64
	dropsAtLast uint64

	frames, bytes, split, parts, dropQ, dropD, errs, idrIn, idrOut, held atomic.Uint64
	lastIn                                                               atomic.Int64 // when the source last handed a frame on
	lastErrLog                                                           atomic.Int64
}

// NewPublisher subscribes to src and to the keyframe requests of the
// subject, and publishes until Close.
func NewPublisher(nc *nats.Conn, src frame.Source, cfg PublisherConfig) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("publishing video on %q: no nats connection", cfg.Subject)
	}
	if src == nil {
		return nil, fmt.Errorf("publishing video on %q: no source", cfg.Subject)
	}
	if err := ValidateSubject(cfg.Subject); err != nil {
		return nil, fmt.Errorf("publishing video: %w", err)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultPublishQueue
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{nc: nc, src: src, cfg: cfg, log: lg, ch: make(chan frame.Frame, cfg.Queue), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	req := cfg.Requester
	p.idr = keyreq.New(cfg.IDRCoalesce, func() {
		p.idrOut.Add(1)
		if req != nil {
			req.RequestKeyframe()
			return
		}
		if err := nc.Publish(ForceIDRSubject, []byte(IDRBody)); err != nil {
			p.log.Warn("passing a keyframe request on", "subject", ForceIDRSubject, "error", err)
		}
	})
	sub, err := nc.Subscribe(IDRSubject(cfg.Subject), func(*nats.Msg) {
		p.idrIn.Add(1)
		p.idr.RequestKeyframe()
	})
	if err != nil {
		p.idr.Close()
		return nil, fmt.Errorf("subscribing to keyframe requests on %q: %w", IDRSubject(cfg.Subject), err)
	}
	p.sub = sub
	// Frames the source read before now are not held for us.
	p.lastIn.Store(time.Now().UnixNano())
	go p.run()
	p.stop = src.Subscribe(p.enqueue)
	return p, nil
}

// enqueue runs on the source's goroutine and never waits.
func (p *Publisher) enqueue(f frame.Frame) {
	p.lastIn.Store(time.Now().UnixNano())
	select {
	case p.ch <- f:
	default:
		p.dropQ.Add(1)
	}
}

func (p *Publisher) run() {
	defer close(p.done)
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("video publisher stopped by a panic", "subject", p.cfg.Subject, "panic", fmt.Sprint(v))
		}
	}()
	var buf []byte
	tick := time.NewTicker(HeldCheck)
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case f := <-p.ch:
			buf = p.publish(f, buf)
		case <-tick.C:
			p.checkHeld()
		}
	}
}

// HeldCheck is how often a Publisher checks whether its source reads
// frames without handing them on.
const HeldCheck = 100 * time.Millisecond

// checkHeld asks the producer for a keyframe when the source has read
// frames that it holds back (a ring reader with keyframe gating after a
// missed frame; an edge source after a loss): without one the stream, and
// every edge, would wait for the producer's next keyframe on its own.
func (p *Publisher) checkHeld() {
	la := p.src.LastArrival()
	if la.IsZero() {
		return
	}
	in := time.Unix(0, p.lastIn.Load())
	if la.Sub(in) > HeldCheck {
		p.held.Add(1)
		p.idr.RequestKeyframe()
	}
}

// publish sends one frame, in parts when it is larger than the server's
// max_payload, and returns buf for reuse. A frame that the source marked as
// a discontinuity (its own reader missed frames, or the writer restarted)
// carries HeaderPrev when every frame before it was published: the edge
// then knows the gap is the origin's, not a loss in transit, and treats it
// as the origin's own clients see it.
func (p *Publisher) publish(f frame.Frame, buf []byte) []byte {
	if !p.nc.IsConnected() {
		// The client library would buffer it and send seconds-old video
		// after the reconnection; edges rather see the gap and ask for a
		// keyframe.
		p.dropD.Add(1)
		return buf
	}
	var hdr nats.Header
	if drops := p.dropQ.Load() + p.dropD.Load() + p.errs.Load(); f.Discontinuity && p.published && drops == p.dropsAtLast {
		hdr = nats.Header{HeaderPrev: []string{strconv.FormatUint(p.lastSeq, 10)}}
	}
	maxPayload := p.nc.MaxPayload()
	if int64(shmring.HeaderSize+len(f.Payload)+headerRoom(hdr)) <= maxPayload {
		buf = slices.Grow(buf[:0], shmring.HeaderSize+len(f.Payload))[:shmring.HeaderSize]
		f.Header.Put(buf)
		buf = append(buf, f.Payload...)
		var err error
		if hdr == nil {
			err = p.nc.Publish(p.cfg.Subject, buf)
		} else {
			err = p.nc.PublishMsg(&nats.Msg{Subject: p.cfg.Subject, Header: hdr, Data: buf})
		}
		if err != nil {
			p.fail(f, err)
			return buf
		}
		p.sent(f)
		return buf
	}
	err := SplitFrame(f, maxPayload, 0, func(off int, data []byte) error {
		h := nats.Header{HeaderPart: []string{strconv.Itoa(off)}}
		if off == 0 && hdr != nil {
			h[HeaderPrev] = hdr[HeaderPrev]
		}
		if err := p.nc.PublishMsg(&nats.Msg{Subject: p.cfg.Subject, Header: h, Data: data}); err != nil {
			return err
		}
		p.parts.Add(1)
		return nil
	})
	if err != nil {
		p.fail(f, err)
		return buf
	}
	p.split.Add(1)
	p.sent(f)
	return buf
}

// sent records a published frame.
func (p *Publisher) sent(f frame.Frame) {
	p.frames.Add(1)
	p.bytes.Add(uint64(len(f.Payload)))
	p.published, p.lastSeq = true, f.Header.FrameSeq
	p.dropsAtLast = p.dropQ.Load() + p.dropD.Load() + p.errs.Load()
}

func headerRoom(h nats.Header) int {
	if h == nil {
		return 0
	}
	return partOverhead
}

// fail counts a frame the client refused and logs at most once a second.
func (p *Publisher) fail(f frame.Frame, err error) {
	p.errs.Add(1)
	now := time.Now().UnixNano()
	if last := p.lastErrLog.Load(); now-last > int64(time.Second) && p.lastErrLog.CompareAndSwap(last, now) {
		p.log.Warn("publishing a video frame", "subject", p.cfg.Subject, "frame_seq", f.Header.FrameSeq,
			"bytes", len(f.Payload), "error", err)
	}
}

// RequestKeyframe passes one keyframe request to the producer, coalesced
// with the edges' requests.
func (p *Publisher) RequestKeyframe() { p.idr.RequestKeyframe() }

// Subject returns the video subject.
func (p *Publisher) Subject() string { return p.cfg.Subject }

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Frames: p.frames.Load(), Bytes: p.bytes.Load(), SplitFrames: p.split.Load(), Parts: p.parts.Load(),
		DroppedQueue: p.dropQ.Load(), DroppedDisconnected: p.dropD.Load(), Errors: p.errs.Load(),
		IDRReceived: p.idrIn.Load(), IDRForwarded: p.idrOut.Load(), Held: p.held.Load(),
	}
}

// Close stops publishing: it leaves the source, unsubscribes from keyframe
// requests and waits for the sender to end.
func (p *Publisher) Close() error {
	var err error
	p.once.Do(func() {
		p.stop()
		if e := p.sub.Unsubscribe(); e != nil && p.nc.Status() != nats.CLOSED {
			err = fmt.Errorf("unsubscribing from %q: %w", p.sub.Subject, e)
		}
		p.idr.Close()
		p.cancel()
		<-p.done
	})
	return err
}
