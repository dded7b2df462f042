package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// keepResult is what a keep's copy did to the commands sent meanwhile.
type keepResult struct {
	// Command latencies (ms, sorted): from the WebSocket write to the
	// message on NATS, before the keep and while its copy ran.
	base, during []float64
	lost         int     // commands sent that never reached NATS
	copyS        float64 // from the keep's ack to the copy done
	keptMB       float64 // the kept stream's bytes, MB (10^6)
}

// commandRate is what one client sends: under sdr_stream's default
// command_rate (50/s), so that none is refused.
const commandRate = 40

// keepCost measures whether a keep's copy delays commands. One WebSocket
// client on the stream sends a command (pause) every 1/commandRate s, which
// sdr_stream publishes on command.genesis.pause; a NATS subscriber (the
// simulator's place) takes each, and its latency is from the write to the
// arrival. For baseFor the client sends commands alone; then it sends a
// keep of the last `before` (after_s 0) and goes on until the recording's
// ?recording no longer lists the copy as running. The copy shares the
// recorder's NATS connection, which is sdr_nats's: the connection the
// commands are published on.
func keepCost(s *server, nc *nats.Conn, before, baseFor time.Duration) (keepResult, error) {
	var res keepResult
	var mu sync.Mutex
	arrived := map[int]time.Time{}
	sub, err := nc.Subscribe("command.genesis.pause", func(m *nats.Msg) {
		now := time.Now()
		var c struct {
			Seq int `json:"cmd_seq"`
		}
		if json.Unmarshal(m.Data, &c) == nil {
			mu.Lock()
			arrived[c.Seq] = now
			mu.Unlock()
		}
	})
	if err != nil {
		return res, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return res, err
	}

	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
	if err != nil {
		return res, fmt.Errorf("dialing the stream: %w", err)
	}
	defer ws.Close()
	acks := make(chan map[string]any, 16)
	go func() { // the video goes by; the keep's ack comes back
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				close(acks)
				return
			}
			topic, payload, err := wire.ParseTelemetry(msg)
			if err != nil || topic != "telemetry.command.ack" {
				continue
			}
			var a map[string]any
			if json.Unmarshal(payload, &a) == nil && a["action"] == "keep" {
				acks <- a
			}
		}
	}()
	send := func(body []byte) error {
		return ws.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...))
	}

	sent := map[int]time.Time{}
	var baseSeqs, keepSeqs []int
	seq := 0
	tick := time.NewTicker(time.Second / commandRate)
	defer tick.Stop()
	command := func() error {
		<-tick.C
		seq++
		sent[seq] = time.Now()
		return send(fmt.Appendf(nil, `{"action":"pause","cmd_seq":%d}`, seq))
	}
	for end := time.Now().Add(baseFor); time.Now().Before(end); {
		if err := command(); err != nil {
			return res, err
		}
		baseSeqs = append(baseSeqs, seq)
	}

	const name = "bench-keep"
	seq++
	if err := send(fmt.Appendf(nil, `{"action":"keep","cmd_seq":%d,"data":{"name":%q,"before_s":%.0f,"after_s":0}}`, seq, name, before.Seconds())); err != nil {
		return res, err
	}
	var ack map[string]any
	select {
	case ack = <-acks:
	case <-time.After(30 * time.Second):
		return res, fmt.Errorf("no answer to the keep")
	}
	if ack["status"] != "ok" {
		return res, fmt.Errorf("keep refused: %v", ack)
	}
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	lastPoll := start
	for {
		if err := command(); err != nil {
			return res, err
		}
		keepSeqs = append(keepSeqs, seq)
		if time.Since(lastPoll) < 250*time.Millisecond {
			continue
		}
		lastPoll = time.Now()
		copying, bytes, err := keptState(s, name)
		if err != nil {
			return res, err
		}
		if !copying {
			res.copyS = time.Since(start).Seconds()
			res.keptMB = float64(bytes) / 1e6
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the keep still copying after %s", deadline.Sub(start))
		}
	}

	// The last commands' arrival, then the latencies.
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	lat := func(seqs []int) []float64 {
		var v []float64
		for _, q := range seqs {
			if a, ok := arrived[q]; ok {
				v = append(v, float64(a.Sub(sent[q]))/1e6)
			} else {
				res.lost++
			}
		}
		slices.Sort(v)
		return v
	}
	res.base, res.during = lat(baseSeqs), lat(keepSeqs)
	return res, nil
}

// keptState reads the stream's ?recording for the kept window name: whether
// its copy runs, and its bytes.
func keptState(s *server, name string) (copying bool, bytes int64, err error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stream/ws?recording", s.port))
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	var tl struct {
		Kept []struct {
			Name    string `json:"name"`
			Bytes   int64  `json:"bytes"`
			Copying bool   `json:"copying"`
		} `json:"kept"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tl); err != nil {
		return false, 0, fmt.Errorf("?recording: %w", err)
	}
	for _, k := range tl.Kept {
		if k.Name == name {
			return k.Copying, k.Bytes, nil
		}
	}
	return true, 0, nil // not listed yet
}
