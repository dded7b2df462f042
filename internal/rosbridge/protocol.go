package rosbridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// message holds the fields of a rosbridge v2 op that the mux reads. Msg and
// Args stay raw: the mux forwards them without decoding.
type message struct {
	Op           string          `json:"op"`
	ID           string          `json:"id,omitempty"`
	Topic        string          `json:"topic,omitempty"`
	Type         string          `json:"type,omitempty"`
	Service      string          `json:"service,omitempty"`
	Msg          json.RawMessage `json:"msg,omitempty"`
	Args         json.RawMessage `json:"args,omitempty"`
	Compression  string          `json:"compression,omitempty"`
	ThrottleRate int             `json:"throttle_rate,omitempty"`
	QueueLength  int             `json:"queue_length,omitempty"`
	FragmentSize int             `json:"fragment_size,omitempty"`
	Timeout      float64         `json:"timeout,omitempty"`
	Level        string          `json:"level,omitempty"`
	Latch        bool            `json:"latch,omitempty"`
	QueueSize    int             `json:"queue_size,omitempty"`
	Data         string          `json:"data,omitempty"`
	Num          int             `json:"num,omitempty"`
	Total        int             `json:"total,omitempty"`
}

// Status levels, in rosbridge's order: a client at level L receives status
// messages of level L and above.
const (
	levelInfo = iota
	levelWarning
	levelError
	levelNone
)

var levelNames = [...]string{"info", "warning", "error", "none"}

func parseLevel(s string) (int, bool) {
	for i, n := range levelNames {
		if n == s {
			return i, true
		}
	}
	return 0, false
}

// statusMessage encodes a rosbridge status op.
func statusMessage(level int, id, msg string) []byte {
	b, _ := json.Marshal(struct {
		Op    string `json:"op"`
		ID    string `json:"id,omitempty"`
		Level string `json:"level"`
		Msg   string `json:"msg"`
	}{"status", id, levelNames[level], msg})
	return b
}

// serviceFailure encodes the service_response a caller gets when the mux
// answers for the upstream (timeout, upstream down).
func serviceFailure(id, service, why string) []byte {
	b, _ := json.Marshal(struct {
		Op      string `json:"op"`
		ID      string `json:"id,omitempty"`
		Service string `json:"service"`
		Values  string `json:"values"`
		Result  bool   `json:"result"`
	}{"service_response", id, service, why, false})
	return b
}

// withID returns the JSON object raw with its "id" member set to id (removed
// when id is empty). The other members are kept byte for byte.
func withID(raw []byte, id string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	if id == "" {
		delete(m, "id")
	} else {
		m["id"], _ = json.Marshal(id)
	}
	return json.Marshal(m)
}

// fragments splits an encoded message into rosbridge fragment ops of at most
// size bytes of data each, cutting only between UTF-8 characters so that
// every piece is a valid JSON string.
func fragments(id string, data []byte, size int) [][]byte {
	if size < 4 {
		size = 4
	}
	var pieces []string
	for len(data) > 0 {
		n := min(size, len(data))
		for n < len(data) && n > 0 && !utf8.RuneStart(data[n]) {
			n--
		}
		if n == 0 { // no character boundary within size bytes: invalid UTF-8
			n = min(size, len(data))
		}
		pieces = append(pieces, string(data[:n]))
		data = data[n:]
	}
	out := make([][]byte, len(pieces))
	for i, p := range pieces {
		out[i], _ = json.Marshal(struct {
			Op    string `json:"op"`
			ID    string `json:"id"`
			Data  string `json:"data"`
			Num   int    `json:"num"`
			Total int    `json:"total"`
		}{"fragment", id, p, i, len(pieces)})
	}
	return out
}

// reassembly collects the fragments of messages a client sends.
type reassembly struct {
	parts map[string]*partial
	order []string
}

type partial struct {
	pieces []string
	have   int
	bytes  int
}

// maxPartials bounds how many fragmented messages a client may have open.
const maxPartials = 8

// add stores one fragment and returns the whole message once every piece is
// in. An error says why the fragment was refused.
func (r *reassembly) add(m *message, maxBytes int) ([]byte, error) {
	if m.ID == "" || m.Total <= 0 || m.Num < 0 || m.Num >= m.Total {
		return nil, fmt.Errorf("fragment: bad id %q, num %d or total %d", m.ID, m.Num, m.Total)
	}
	if m.Total > maxBytes {
		return nil, fmt.Errorf("fragment: total %d exceeds the size cap", m.Total)
	}
	if r.parts == nil {
		r.parts = map[string]*partial{}
	}
	p := r.parts[m.ID]
	if p == nil || len(p.pieces) != m.Total {
		if p == nil && len(r.order) >= maxPartials {
			delete(r.parts, r.order[0])
			r.order = r.order[1:]
		}
		if p == nil {
			r.order = append(r.order, m.ID)
		}
		p = &partial{pieces: make([]string, m.Total)}
		r.parts[m.ID] = p
	}
	if p.pieces[m.Num] == "" && m.Data != "" {
		p.have++
	}
	p.bytes += len(m.Data) - len(p.pieces[m.Num])
	p.pieces[m.Num] = m.Data
	if p.bytes > maxBytes {
		r.drop(m.ID)
		return nil, fmt.Errorf("fragment: message %q exceeds the size cap of %d bytes", m.ID, maxBytes)
	}
	if p.have < m.Total {
		return nil, nil
	}
	r.drop(m.ID)
	return []byte(strings.Join(p.pieces, "")), nil
}

func (r *reassembly) drop(id string) {
	delete(r.parts, id)
	for i, o := range r.order {
		if o == id {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}

// canonicalType writes a ROS message type the way ROS 2 names it:
// "geometry_msgs/Twist" and "geometry_msgs/msg/Twist" are the same type.
func canonicalType(t string) string {
	if parts := strings.Split(t, "/"); len(parts) == 2 && parts[0] != "" && parts[1] != "" {
		return parts[0] + "/msg/" + parts[1]
	}
	return t
}

// sameType reports whether two subscribers' types can share one upstream
// subscription; an empty type lets rosbridge infer it and matches any.
func sameType(a, b string) bool {
	return a == "" || b == "" || canonicalType(a) == canonicalType(b)
}
