package natsapp

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
)

func TestNATSAppValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		app  *NATSApp
		err  string
	}{
		{"defaults", &NATSApp{}, ""},
		{"external", &NATSApp{ConnConfig: ConnConfig{URLs: []string{"nats://a:4222"}, Credentials: "x.creds", TLS: &NATSTLS{CA: "ca.pem"}}}, ""},
		{"embedded with url is not used", &NATSApp{ConnConfig: ConnConfig{URLs: []string{"nats://a:4222"}, Embedded: &NATSEmbedded{Listen: "127.0.0.1:4223"}}}, ""},
		{"credentials embedded", &NATSApp{ConnConfig: ConnConfig{Credentials: "x.creds"}}, "credentials and nkey_seed need an external server"},
		{"tls embedded", &NATSApp{ConnConfig: ConnConfig{TLS: &NATSTLS{}}}, "tls applies to external servers"},
		{"bad listen", &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{Listen: "4222"}}}, `parsing "4222" as host:port`},
		{"bad port", &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{Listen: "127.0.0.1:99999"}}}, "is not a number from 0 to 65535"},
		{"store dir without jetstream", &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{StoreDir: "/x"}}}, "given with JetStream off"},
		{"leaf without url", &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{LeafRemotes: []NATSLeafRemote{{}}}}}, "leaf remote 0 has no url"},
		{"bad subject", &NATSApp{TelemetrySubjects: []string{"telemetry.>.x"}}, "'>' before its last token"},
		{"bad action", &NATSApp{Actions: []string{"set cmd"}}, "is not one token"},
		{"bad rate", &NATSApp{CommandRate: -2}, "command_rate -2"},
		{"rate off", &NATSApp{CommandRate: -1}, ""},
		{"estop before hold", &NATSApp{SafetyGate: &NATSGate{Hold: caddy.Duration(3 * time.Second), Estop: caddy.Duration(2 * time.Second)}}, "must be longer than hold"},
		{"subject cap", &NATSApp{TelemetryMaxSubject: 300}, "exceeds the protocol's 256 bytes"},
		{"linger", &NATSApp{TelemetryLinger: caddy.Duration(2 * time.Second)}, "telemetry_linger 2s"},
		{"linger negative", &NATSApp{TelemetryLinger: -2}, "telemetry_linger -2ns"},
		{"linger off", &NATSApp{TelemetryLinger: -1}, ""},
		{"control lease", &NATSApp{Control: &NATSControl{Lease: true, Idle: caddy.Duration(time.Minute), ViewerActions: []string{"camera"}}}, ""},
		{"control idle off", &NATSApp{Control: &NATSControl{Lease: true, Idle: -1}}, ""},
		{"control idle negative", &NATSApp{Control: &NATSControl{Lease: true, Idle: -2}}, "control idle -2ns"},
		{"control viewer estop", &NATSApp{Control: &NATSControl{Lease: true, ViewerActions: []string{"estop"}}}, `viewer action "estop"`},
		{"control viewer token", &NATSApp{Control: &NATSControl{ViewerActions: []string{"a b"}}}, "is not one token"},
	} {
		moduletest.CheckError(t, c.name, c.app.Validate(), c.err)
	}
}

func TestNATSHandlerValidate(t *testing.T) {
	t.Parallel()
	for o, ok := range map[string]bool{
		"*": true, "https://robot.example": true, "http://localhost:5173": true,
		"robot.example": false, "https://robot.example/app": false, "": false,
	} {
		h := NATSHandler{Origins: []string{o}}
		if err := h.Validate(); (err == nil) != ok {
			t.Errorf("origin %q: %v, want ok=%v", o, err, ok)
		}
	}
}

func TestNATSConnKeyCoversParameters(t *testing.T) {
	t.Parallel()
	base := &NATSApp{}
	k0, _ := base.connConfig().key()
	for name, a := range map[string]*NATSApp{
		"url":      &NATSApp{ConnConfig: ConnConfig{URLs: []string{"nats://x:1"}}},
		"token":    &NATSApp{ConnConfig: ConnConfig{Token: "t"}},
		"listen":   &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{Listen: "127.0.0.1:5000"}}},
		"js":       &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{JetStream: true}}},
		"leaf":     &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{LeafRemotes: []NATSLeafRemote{{URLs: []string{"nats-leaf://h:7422"}}}}}},
		"name":     &NATSApp{ConnConfig: ConnConfig{Name: "other"}},
		"backoff":  &NATSApp{ConnConfig: ConnConfig{ReconnectWaitMax: caddy.Duration(time.Second)}},
		"password": &NATSApp{ConnConfig: ConnConfig{User: "u", Password: "p"}},
		"creds":    &NATSApp{ConnConfig: ConnConfig{Credentials: "x.creds"}},
		"nkey":     &NATSApp{ConnConfig: ConnConfig{NKeySeed: "x.nk"}},
		"tls":      &NATSApp{ConnConfig: ConnConfig{TLS: &NATSTLS{CA: "ca.pem"}}},
	} {
		k, err := a.connConfig().key()
		if err != nil || k == k0 {
			t.Errorf("%s: key %q equals the default's (err %v)", name, k, err)
		}
	}
	// Limits that do not change the connection keep it.
	same := &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{Listen: DefaultNATSListen}}, TelemetryMaxSize: 10, CommandRate: 5}
	if k, _ := same.connConfig().key(); k != k0 {
		t.Errorf("relay limits changed the connection key")
	}
}

// With a URL, embedded options are kept in the config but start no server:
// the example takes SDR_NATS_URL and falls back to the embedded server.
func TestNATSEmbeddedOptionsUnusedWithURL(t *testing.T) {
	t.Parallel()
	a := &NATSApp{ConnConfig: ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}, Embedded: &NATSEmbedded{Listen: "127.0.0.1:4223"}}}
	if p := a.connConfig(); p.Embedded != nil {
		t.Fatalf("url given, but the embedded server would start: %+v", p.Embedded)
	}
	a.URLs = nil
	if p := a.connConfig(); p.Embedded == nil || p.Embedded.Listen != "127.0.0.1:4223" {
		t.Fatalf("no url: embedded server %+v, want one on 127.0.0.1:4223", p.Embedded)
	}
}

// telemetry_linger: unset is the measured default, -1 (Caddyfile "off") is
// none, anything else is taken as given.
func TestNATSTelemetryLinger(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		set  caddy.Duration
		want time.Duration
	}{
		{0, DefaultTelemetryLinger},
		{-1, 0},
		{caddy.Duration(20 * time.Millisecond), 20 * time.Millisecond},
	} {
		a := &NATSApp{TelemetryLinger: c.set}
		if got := a.relayConfig().Linger; got != c.want {
			t.Errorf("telemetry_linger %d: relay linger %v, want %v", c.set, got, c.want)
		}
	}
}

// The control lease is off unless asked for; on, its settings take their
// defaults.
func TestNATSLeaseConfig(t *testing.T) {
	t.Parallel()
	for _, a := range []*NATSApp{{}, {Control: &NATSControl{}}, {Control: &NATSControl{Idle: caddy.Duration(time.Second)}}} {
		if _, on := a.leaseConfig(); on {
			t.Errorf("control %+v: lease on", a.Control)
		}
	}
	cfg, on := (&NATSApp{Control: &NATSControl{Lease: true}}).leaseConfig()
	if !on || cfg.Idle != 30*time.Second || len(cfg.ViewerActions) != 2 {
		t.Errorf("lease on with defaults: %v %+v", on, cfg)
	}
	if cfg, _ := (&NATSApp{Control: &NATSControl{Lease: true, Idle: -1}}).leaseConfig(); cfg.Idle >= 0 {
		t.Errorf("idle off: %v, want negative (never)", cfg.Idle)
	}
}
