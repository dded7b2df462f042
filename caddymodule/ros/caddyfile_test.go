package ros

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
)

func TestROSCaddyfile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, err string
		check         func(*ROS) bool
	}{
		{name: "bare", in: `sdr_ros`, check: func(r *ROS) bool { return r.Upstream == "" }},
		{name: "upstream arg", in: `sdr_ros ws://ros:9090`, check: func(r *ROS) bool { return r.Upstream == "ws://ros:9090" }},
		{name: "lists", in: "sdr_ros {\n subscribe /a /b*\n services /rosapi/*\n}", check: func(r *ROS) bool {
			return len(r.SubscribeTopics) == 2 && r.Services[0] == "/rosapi/*"
		}},
		{name: "rate off", in: "sdr_ros {\n rate_limit off\n}", check: func(r *ROS) bool { return r.RateLimit == -1 }},
		{name: "size", in: "sdr_ros {\n max_message_size 64KiB\n}", check: func(r *ROS) bool { return r.MaxMessageSize == 65536 }},
		{name: "two args", in: `sdr_ros ws://a ws://b`, err: `at most one argument`},
		{name: "upstream twice", in: "sdr_ros ws://a {\n upstream ws://b\n}", err: `upstream given twice`},
		{name: "unknown", in: "sdr_ros {\n topics /a\n}", err: `unknown subdirective "topics"`},
		{name: "duplicate", in: "sdr_ros {\n services /a\n services /b\n}", err: `duplicate subdirective "services"`},
		{name: "empty list", in: "sdr_ros {\n publish\n}", err: `publish needs at least one argument`},
		{name: "origins", in: "sdr_ros {\n origins https://app.example.com https://*.ops.example.com\n}", check: func(r *ROS) bool { return len(r.Origins) == 2 }},
		{name: "origins empty (unset variable)", in: "sdr_ros {\n origins\n}", check: func(r *ROS) bool { return len(r.Origins) == 0 }},
		{name: "bad origin", in: "sdr_ros {\n origins app.example.com\n}", err: `want scheme://host[:port]`},
		{name: "bad glob", in: "sdr_ros {\n publish cmd_vel\n}", err: `ROS names start with '/'`},
		{name: "bad timeout", in: "sdr_ros {\n service_timeout soon\n}", err: `service_timeout "soon"`},
		{name: "bad queue", in: "sdr_ros {\n client_queue 0\n}", err: `want a positive integer`},
		{name: "bad size", in: "sdr_ros {\n max_message_size big\n}", err: `want a size`},
		{name: "flag with arg", in: "sdr_ros {\n allow_motion_without_gate yes\n}", err: `takes no arguments`},
		{name: "bad reconnect", in: "sdr_ros {\n reconnect 5s 1s\n}", err: `min <= max`},
		{name: "http upstream", in: `sdr_ros http://ros:9090`, err: `want a ws:// or wss:// URL`},
		{name: "stop message", in: "sdr_ros {\n stop_message `{\"linear\":{\"x\":0}}`\n}", check: func(r *ROS) bool { return string(r.StopMessage) == `{"linear":{"x":0}}` }},
		{name: "bad stop message", in: "sdr_ros {\n stop_message `[0]`\n}", err: `want a JSON object`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r ROS
			err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if moduletest.ParseFailed(t, err, tc.err) {
				return
			}
			if !tc.check(&r) {
				t.Fatalf("parsed %+v", r)
			}
		})
	}
}
