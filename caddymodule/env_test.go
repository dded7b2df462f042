package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestApplyEnvInProcess: a test that sets SDR_* variables re-applies the
// environment and the Caddyfile sees the derived and normalised values; a
// literal token stays strict.
func TestApplyEnvInProcess(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	const caddyfile = `{$SDR_LISTEN_SITE} {
	bind {$SDR_LISTEN_BIND}
	sdr_stream {
		idr_timeout {$SDR_IDR_TIMEOUT_MS}
		crc {$SDR_CRC_ENABLED}
	}
}
`
	for _, c := range []struct{ addr, listen string }{
		{"0.0.0.0:9080", "tcp4/0.0.0.0:9080"},
		{"127.0.0.1:9081", "127.0.0.1:9081"},
	} {
		t.Setenv("SDR_LISTEN_ADDR", c.addr)
		t.Setenv("SDR_IDR_TIMEOUT_MS", "abc")
		t.Setenv("SDR_CRC_ENABLED", "False")
		ApplyEnv(t.Setenv)
		out, _, err := adapter.Adapt([]byte(caddyfile), nil)
		if err != nil {
			t.Fatalf("SDR_LISTEN_ADDR=%s: %v", c.addr, err)
		}
		var cfg struct {
			Apps struct {
				HTTP struct {
					Servers map[string]struct {
						Listen []string          `json:"listen"`
						Routes []json.RawMessage `json:"routes"`
					} `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		srv, ok := cfg.Apps.HTTP.Servers["srv0"]
		if !ok || len(srv.Listen) != 1 || srv.Listen[0] != c.listen {
			t.Errorf("SDR_LISTEN_ADDR=%s: servers %+v, want one listening on %s", c.addr, cfg.Apps.HTTP.Servers, c.listen)
		}
		js := string(out)
		if strings.Contains(js, `"host"`) {
			t.Errorf("SDR_LISTEN_ADDR=%s: a host matcher: %s", c.addr, js)
		}
		if !strings.Contains(js, `"idr_timeout":5000000000`) || strings.Contains(js, "disable_crc") {
			t.Errorf("SDR_IDR_TIMEOUT_MS=abc, SDR_CRC_ENABLED=False: want the default 5s and CRC on: %s", js)
		}
	}

	if _, _, err := adapter.Adapt([]byte(":9080 {\n\tsdr_stream {\n\t\tidr_timeout abc\n\t}\n}\n"), nil); err == nil {
		t.Error("a literal idr_timeout abc was accepted")
	}
	if _, _, err := adapter.Adapt([]byte(":9080 {\n\tsdr_stream {\n\t\tcrc False\n\t}\n}\n"), nil); err != nil {
		t.Errorf("a literal crc False (false, as Caddyfile booleans read): %v", err)
	}
}
