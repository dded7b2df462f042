package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/shmring"
)

// Bus is the simulator's side of NATS for `caddy sdr-testsrc --nats`: it
// takes command.genesis.* as the simulator does, so that the demo page's
// buttons get answers.
//
//   - force_idr: the next frame is an IDR.
//   - every command with a cmd_seq: telemetry.command.ack
//     {action, cmd_seq, status "ok", detail}.
//   - estop, estop_clear, pause, reset (also the safety gate's own estop):
//     telemetry.safety.state {"state": ESTOP|RUNNING|PAUSED, "reason"}.
//   - set_cmd_vel: its data echoed on telemetry.velocity.command.
//   - settings {codec, stream_fps, camera_res, jpeg_quality, h264_bitrate},
//     at the top level or under data: the encoder is opened again with them
//     (codec "h264", "hevc" or "jpeg"; camera_res "WxH" or [W, H];
//     h264_bitrate in kbit/s). h264_preset is ignored.
//
// It publishes telemetry.frame.stats {frame_id, encode_ms, codec,
// frame_bytes} once a second.
type Bus struct {
	nc  *nats.Conn
	src *Writer
	log *slog.Logger

	mu    sync.Mutex
	state string
	last  frameStats
}

type frameStats struct {
	FrameID    uint64  `json:"frame_id"`
	EncodeMs   float64 `json:"encode_ms"`
	Codec      string  `json:"codec"`
	FrameBytes int     `json:"frame_bytes"`
}

// Subjects of docs/protocol.md ("NATS subjects") that the stand-in speaks.
const (
	subjectCommands    = "command.genesis.>"
	commandPrefix      = "command.genesis."
	subjectAck         = "telemetry.command.ack"
	subjectSafetyState = "telemetry.safety.state"
	subjectVelocity    = "telemetry.velocity.command"
	subjectFrameStats  = "telemetry.frame.stats"
	statsPeriod        = time.Second
	stateRunning       = "RUNNING"
)

// ConnectBus connects to url (retrying in the background until the server
// is up, as the demo starts the server after the source) and subscribes to
// the commands that src answers. Run publishes the frame statistics that
// Frame records; set Frame as src's OnFrame.
func ConnectBus(url string, src *Writer, log *slog.Logger) (*Bus, error) {
	b := &Bus{src: src, log: log, state: stateRunning}
	nc, err := nats.Connect(url,
		nats.Name("sdr-testsrc"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.ConnectHandler(func(*nats.Conn) { log.Info("nats connected", "url", url) }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected", "url", url) }),
	)
	if err != nil {
		return nil, fmt.Errorf("test source: connecting to nats %s: %w", url, err)
	}
	b.nc = nc
	if _, err := nc.Subscribe(subjectCommands, b.command); err != nil {
		nc.Close()
		return nil, fmt.Errorf("test source: subscribing to %s: %w", subjectCommands, err)
	}
	return b, nil
}

// Frame records the latest frame for the stats (the Writer's OnFrame).
func (b *Bus) Frame(h shmring.Header, encode time.Duration) {
	b.mu.Lock()
	b.last = frameStats{FrameID: h.FrameID, EncodeMs: float64(encode.Microseconds()) / 1000, Codec: h.Codec.String(), FrameBytes: int(h.Size)}
	b.mu.Unlock()
}

// Run publishes the frame stats until ctx ends, then closes the connection.
func (b *Bus) Run(ctx context.Context) {
	defer b.nc.Close()
	t := time.NewTicker(statsPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		st := b.last
		b.mu.Unlock()
		if st.FrameID == 0 {
			continue
		}
		b.publish(subjectFrameStats, st)
	}
}

func (b *Bus) command(m *nats.Msg) {
	action := m.Subject[len(commandPrefix):]
	if action == "force_idr" {
		b.src.RequestKeyframe()
		return
	}
	var c struct {
		CmdSeq *json.Number    `json:"cmd_seq"`
		Data   json.RawMessage `json:"data"`
		Reason string          `json:"reason"`
		Safety string          `json:"_safety"`
	}
	if err := json.Unmarshal(m.Data, &c); err != nil {
		b.log.Warn("command is not JSON", "subject", m.Subject, "error", err)
		return
	}
	state := ""
	switch action {
	case "estop":
		state = "ESTOP"
	case "estop_clear", "reset":
		state = stateRunning
	case "pause":
		state = "PAUSED"
	case "set_cmd_vel":
		if len(c.Data) > 0 {
			b.publish(subjectVelocity, c.Data)
		}
	case "settings":
		set, err := ParseSettings(m.Data)
		if err != nil {
			b.log.Warn("settings not understood", "error", err)
			if c.CmdSeq != nil {
				b.publish(subjectAck, map[string]any{"action": action, "cmd_seq": c.CmdSeq, "status": "rejected", "detail": err.Error()})
			}
			return
		}
		b.src.Apply(set)
	}
	if state != "" {
		b.mu.Lock()
		b.state = state
		b.mu.Unlock()
		reason := c.Reason
		if reason == "" {
			reason = action
		}
		b.publish(subjectSafetyState, map[string]string{"state": state, "reason": reason})
	}
	// The safety gate's own commands carry no cmd_seq and get no ack.
	if c.CmdSeq != nil && c.Safety == "" {
		b.publish(subjectAck, map[string]any{"action": action, "cmd_seq": c.CmdSeq, "status": "ok", "detail": "sdr-testsrc"})
	}
}

func (b *Bus) publish(subject string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		b.log.Warn("encoding telemetry", "subject", subject, "error", err)
		return
	}
	if err := b.nc.Publish(subject, body); err != nil {
		b.log.Debug("publishing telemetry", "subject", subject, "error", err)
	}
}

// ParseSettings reads a command.genesis.settings body.
func ParseSettings(body []byte) (Settings, error) {
	type fields struct {
		Codec       *string         `json:"codec"`
		FPS         *float64        `json:"stream_fps"`
		Res         json.RawMessage `json:"camera_res"`
		JPEGQuality *float64        `json:"jpeg_quality"`
		Bitrate     *float64        `json:"h264_bitrate"`
	}
	var top struct {
		fields
		Data *fields `json:"data"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return Settings{}, fmt.Errorf("settings: %w", err)
	}
	f := top.fields
	if top.Data != nil {
		d := *top.Data
		if d.Codec != nil {
			f.Codec = d.Codec
		}
		if d.FPS != nil {
			f.FPS = d.FPS
		}
		if d.Res != nil {
			f.Res = d.Res
		}
		if d.JPEGQuality != nil {
			f.JPEGQuality = d.JPEGQuality
		}
		if d.Bitrate != nil {
			f.Bitrate = d.Bitrate
		}
	}
	var set Settings
	if f.Codec != nil {
		c, err := ParseCodec(*f.Codec)
		if err != nil || c.IsRaw() {
			return set, fmt.Errorf("settings: codec %q: want h264, hevc or jpeg", *f.Codec)
		}
		set.Codec = c
	}
	if f.FPS != nil {
		set.FPS = int(*f.FPS)
		if set.FPS < 1 || set.FPS > 240 {
			return set, fmt.Errorf("settings: stream_fps %v: want 1..240", *f.FPS)
		}
	}
	if len(f.Res) > 0 && string(f.Res) != "null" {
		var s string
		var wh []int
		switch {
		case json.Unmarshal(f.Res, &s) == nil:
			w, h, err := ParseResolution(s)
			if err != nil {
				return set, fmt.Errorf("settings: camera_res: %w", err)
			}
			set.Width, set.Height = w, h
		case json.Unmarshal(f.Res, &wh) == nil && len(wh) == 2 && wh[0] > 0 && wh[1] > 0:
			set.Width, set.Height = wh[0], wh[1]
		default:
			return set, fmt.Errorf("settings: camera_res %s: want \"WxH\" or [W, H]", f.Res)
		}
	}
	if f.JPEGQuality != nil {
		set.JPEGQuality = int(*f.JPEGQuality)
		if set.JPEGQuality < 1 || set.JPEGQuality > 100 {
			return set, fmt.Errorf("settings: jpeg_quality %v: want 1..100", *f.JPEGQuality)
		}
	}
	if f.Bitrate != nil {
		set.BitrateKbps = int(*f.Bitrate)
		if set.BitrateKbps < 16 || set.BitrateKbps > 500000 {
			return set, fmt.Errorf("settings: h264_bitrate %v kbit/s: want 16..500000", *f.Bitrate)
		}
	}
	return set, nil
}
