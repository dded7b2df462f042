package stream

import (
	"encoding/json"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/relay"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// recordDataChannel returns the rtc.SessionConfig.OnCommand that records
// the commands a WebRTC session of stream's client sends on its `commands`
// DataChannel, nil when rec is nil. A DataChannel has no ack, so each
// judgement is handed to the recorder as the ack the /stream/ws command
// path answers for the same judgement: the records read the same,
// whichever path a command came by.
func recordDataChannel(rec frame.Recorder, stream, client string) func(body []byte, result, detail string) {
	if rec == nil {
		return nil
	}
	return func(body []byte, result, detail string) {
		rec.RecordCommand(stream, client, body, dataChannelAck(result, detail))
	}
}

// dataChannelAck is the 0x02 ack on telemetry.command.ack that stands for
// the result of a `commands` message (internal/rtc's Metrics.Messages
// results): nil when it was published; status gated when the safety gate
// held it; ok when the control lease took it (take_control or
// release_control); unavailable when there was no NATS to publish on;
// rejected otherwise. detail is the ack's detail.
func dataChannelAck(result, detail string) []byte {
	status := "rejected"
	switch result {
	case "published":
		return nil
	case "gated":
		status = "gated"
	case "control_taken", "control_released":
		status = "ok"
	case "unavailable", "error":
		status = "unavailable"
	}
	p, err := json.Marshal(struct {
		Status string `json:"status"`
		Detail string `json:"detail"`
	}{status, detail})
	if err != nil {
		// Only invalid UTF-8 in detail gets here, which json.Marshal
		// replaces; never record a rejection as published.
		p = []byte(`{"status":"rejected"}`)
	}
	msg, _ := wire.Telemetry(relay.SubjectAck, p)
	return msg
}
