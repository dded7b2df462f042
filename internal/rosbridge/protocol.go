package rosbridge

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sdr-os/sdr-caddy/internal/strictjson"
)

// message holds the fields of a rosbridge v2 op that the mux reads. Msg and
// Args stay raw: the mux forwards them without decoding. A client's op is
// read with parseMessage; the json tags serve the ops the mux writes.
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

// parseMessage reads one op from a client. The text must pass
// strictjson.Check: rosbridge_server reads it with Python's json module,
// which keeps the last of duplicate keys and matches them by case, while
// Go matches keys without case; an op with keys equal but for case,
// duplicate keys, invalid UTF-8 or nesting deeper than 32 could be judged
// here as one thing and done upstream as another, so it is refused (the
// error is then a *strictjson.Error). Members are matched by their exact
// names, as rosbridge_server matches them: "OP" is not "op".
func parseMessage(data []byte) (*message, error) {
	if err := strictjson.Check(data); err != nil {
		return nil, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names) // the same error for the same op
	var m message
	for _, name := range names {
		dst := m.member(name)
		if dst == nil {
			continue // rosbridge ignores what it does not know
		}
		if err := json.Unmarshal(members[name], dst); err != nil {
			return nil, fmt.Errorf("member %q: %w", name, err)
		}
	}
	return &m, nil
}

// member returns where the op member of this exact name goes, or nil.
func (m *message) member(name string) any {
	switch name {
	case "op":
		return &m.Op
	case "id":
		return &m.ID
	case "topic":
		return &m.Topic
	case "type":
		return &m.Type
	case "service":
		return &m.Service
	case "msg":
		return &m.Msg
	case "args":
		return &m.Args
	case "compression":
		return &m.Compression
	case "throttle_rate":
		return &m.ThrottleRate
	case "queue_length":
		return &m.QueueLength
	case "fragment_size":
		return &m.FragmentSize
	case "timeout":
		return &m.Timeout
	case "level":
		return &m.Level
	case "latch":
		return &m.Latch
	case "queue_size":
		return &m.QueueSize
	case "data":
		return &m.Data
	case "num":
		return &m.Num
	case "total":
		return &m.Total
	}
	return nil
}

// qualifyName checks a topic or service name a client gave by the ROS 2
// naming rules and returns the fully qualified name that sdr_ros judges it
// by: its allowlists and motion topics name fully qualified names. A
// relative name ("cmd_vel") is qualified in the root namespace
// ("/cmd_vel"), where rosbridge_server runs as SDR_OS launches it. A valid
// name is tokens of letters, digits and '_', none starting with a digit,
// each after a '/': no empty token ("//", a trailing '/', "/" alone), no
// "." or "..", nothing else. Private names ("~/x") and substitutions
// ("{node}") name different topics for different nodes and are refused.
func qualifyName(name string) (string, error) {
	full := name
	if !strings.HasPrefix(name, "/") {
		full = "/" + name
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("invalid ROS name %q: %s", truncateName(name), why)
	}
	switch {
	case name == "":
		return bad("empty")
	case name[0] == '~':
		return bad("private names (~) are not served by sdr_ros")
	case strings.ContainsAny(name, "{}"):
		return bad("substitutions ({...}) are not served by sdr_ros")
	case full == "/":
		return bad("the root namespace is not a name")
	case strings.HasSuffix(full, "/"):
		return bad("ends with '/'")
	}
	for _, tok := range strings.Split(full[1:], "/") {
		if tok == "" {
			return bad("empty segment ('//')")
		}
		if tok[0] >= '0' && tok[0] <= '9' {
			return bad(fmt.Sprintf("segment %q starts with a digit", truncateName(tok)))
		}
		for _, r := range tok {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return bad(fmt.Sprintf("character %q not allowed (letters, digits, '_' and '/' only)", r))
			}
		}
	}
	return full, nil
}

// truncateName cuts a name echoed in a status message to 128 bytes.
func truncateName(name string) string {
	if len(name) <= 128 {
		return name
	}
	n := 128
	for n > 0 && !utf8.RuneStart(name[n]) {
		n--
	}
	return name[:n] + "..."
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
