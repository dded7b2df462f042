package sdrenv

import (
	"maps"
	"strings"
	"testing"
)

// oldCase is one value of one old variable and what the old transport-server
// made of it (its config.rs: numbers through str::parse::<usize|u64>() with
// unwrap_or(default); SDR_CRC_ENABLED v != "false" && v != "0";
// SDR_SHM_KEYFRAME_GATING v == "true" || v == "1"; strings as given).
type oldCase struct {
	name, value string
	want        string // the value it used
	warn        bool   // sdr-caddy says it did not take the value as given
}

// numberCases are the values of a number variable with default def.
func numberCases(name, def string) []oldCase {
	return []oldCase{
		{name, "250", "250", false},
		{name, "0", "0", false},
		{name, "+250", "250", false}, // Rust accepts one leading '+'
		{name, "007", "7", false},
		{name, "abc", def, true},
		{name, "", def, true},
		{name, "-1", def, true},
		{name, " 250", def, true},
		{name, "250 ", def, true},
		{name, "2.5", def, true},
		{name, "1e3", def, true},
		{name, "1_000", def, true},
		{name, "4MiB", def, true},
		{name, "++1", def, true},
		{name, "+", def, true},
		{name, "0x10", def, true},
		{name, "18446744073709551616", def, true}, // u64::MAX + 1 overflows
	}
}

func TestNormalizeAsTheOldServer(t *testing.T) {
	t.Parallel()
	var cases []oldCase
	for _, n := range []struct{ name, def string }{
		{"SDR_SHM_SIZE", "4194304"},
		{"SDR_BROADCAST_CAPACITY", "64"},
		{"SDR_TELEMETRY_MAX_SIZE", "65536"},
		{"SDR_IDR_COALESCE_MS", "500"},
		{"SDR_IDR_TIMEOUT_MS", "5000"},
		{"SDR_VIDEO_GATE_HOLD_MS", "1000"},
		{"SDR_VIDEO_GATE_ESTOP_MS", "5000"},
		{"SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS", "2000"},
	} {
		cases = append(cases, numberCases(n.name, n.def)...)
	}
	// usize on a 64-bit machine: u64::MAX is a size the old server took
	// (and then failed to map); milliseconds beyond what a Go duration
	// holds are clamped to the longest one.
	cases = append(cases,
		oldCase{"SDR_SHM_SIZE", "18446744073709551615", "18446744073709551615", false},
		oldCase{"SDR_IDR_TIMEOUT_MS", "9223372036854", "9223372036854", false},
		oldCase{"SDR_IDR_TIMEOUT_MS", "9223372036855", "9223372036854", true},
		oldCase{"SDR_VIDEO_GATE_ESTOP_MS", "18446744073709551615", "9223372036854", true},
	)
	for _, v := range []struct{ value, want string }{
		{"true", "true"}, {"1", "true"}, {"false", "false"}, {"0", "false"},
		{"False", "true"}, {"FALSE", "true"}, {"no", "true"}, {"off", "true"},
		{"", "true"}, {" false", "true"}, {"yes", "true"},
	} {
		cases = append(cases, oldCase{"SDR_CRC_ENABLED", v.value, v.want, false})
	}
	for _, v := range []struct{ value, want string }{
		{"true", "true"}, {"1", "true"}, {"false", "false"}, {"0", "false"},
		{"yes", "false"}, {"True", "false"}, {"on", "false"}, {"", "false"},
		{"1 ", "false"},
	} {
		cases = append(cases, oldCase{"SDR_SHM_KEYFRAME_GATING", v.value, v.want, false})
	}
	cases = append(cases,
		oldCase{"SDR_SHM_PATH", "/dev/shm/robot two/frames", "/dev/shm/robot two/frames", false},
		oldCase{"SDR_SHM_PATH", "", "/dev/shm/sdr_os_ipc/frames", true},
		oldCase{"SDR_TELEMETRY_SUBJECTS", "telemetry.frame.>", "telemetry.frame.>", false},
		oldCase{"SDR_TELEMETRY_SUBJECTS", "", "telemetry.>", true},
		oldCase{"SDR_NATS_URL", "nats://nats:4222", "nats://nats:4222", false},
		oldCase{"SDR_NATS_URL", "", "", false},
	)

	old := map[string]OldVar{}
	for _, o := range Old {
		old[o.Name] = o
	}
	tested := map[string]bool{"SDR_LISTEN_ADDR": true} // TestResolveListenAddr
	for _, c := range cases {
		o, ok := old[c.name]
		if !ok {
			t.Fatalf("%s is not in Old", c.name)
		}
		tested[c.name] = true
		got, w := Normalize(o, c.value)
		if got != c.want {
			t.Errorf("%s=%q: got %q, want %q", c.name, c.value, got, c.want)
		}
		if (w != nil) != c.warn {
			t.Errorf("%s=%q: warning %v, want one: %t", c.name, c.value, w, c.warn)
		}
		if w != nil && (w.Var != c.name || w.Value != c.value || !strings.Contains(w.Message, c.name)) {
			t.Errorf("%s=%q: warning %+v does not name the variable and its value", c.name, c.value, w)
		}
		// What sdr-caddy wrote is read back unchanged: applying twice (a
		// child process, a reload) warns once.
		if again, w := Normalize(o, got); again != got || w != nil {
			t.Errorf("%s=%q: normalising %q again gives %q, %v", c.name, c.value, got, again, w)
		}
	}
	for _, o := range Old {
		if !tested[o.Name] {
			t.Errorf("no case for %s", o.Name)
		}
	}
}

// env is a lookup over a fixed environment.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestSiteFor(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		value, bindHost string
		want            Site
	}{
		// The old transport-server's socket addresses.
		{"0.0.0.0:8080", "", Site{"http://:8080", "tcp4/0.0.0.0", "8080"}},
		{"127.0.0.1:8080", "", Site{"http://:8080", "127.0.0.1", "8080"}},
		{"[::]:8080", "", Site{"http://:8080", "[::]", "8080"}},
		{"[::1]:8081", "", Site{"http://:8081", "[::1]", "8081"}},
		{"[fe80::1%eth0]:8080", "", Site{"http://:8080", "[fe80::1%eth0]", "8080"}},
		{"192.168.1.20:8080", "127.0.0.1", Site{"http://:8080", "192.168.1.20", "8080"}},
		// A host named beats SDR_BIND_HOST; no host takes it.
		{":8080", "", Site{"http://:8080", "tcp/", "8080"}},
		{":8080", "127.0.0.1 ::1", Site{"http://:8080", "127.0.0.1 ::1", "8080"}},
		{"", "", Site{"http://:9000", "tcp/", "9000"}},
		{"  ", " 10.0.0.1 ", Site{"http://:9000", "10.0.0.1", "9000"}},
		{"0.0.0.0", "", Site{"http://:9000", "tcp4/0.0.0.0", "9000"}},
		{"127.0.0.1", "", Site{"http://:9000", "127.0.0.1", "9000"}},
		{"::1", "", Site{"http://:9000", "[::1]", "9000"}},
		{"[::]", "", Site{"http://:9000", "[::]", "9000"}},
		{"localhost:8080", "", Site{"http://:8080", "127.0.0.1", "8080"}},
		{"LocalHost", "", Site{"http://:9000", "127.0.0.1", "9000"}},
		// Names and URLs are Caddy site addresses, unchanged.
		{"robot.example.com", "", Site{"robot.example.com", "tcp/", ""}},
		{"robot.example.com:8443", "127.0.0.1", Site{"robot.example.com:8443", "127.0.0.1", ""}},
		{"http://0.0.0.0:8080", "", Site{"http://0.0.0.0:8080", "tcp/", ""}},
		{"0.0.0.0:http", "", Site{"0.0.0.0:http", "tcp/", ""}},
		{":99999", "", Site{":99999", "tcp/", ""}},
		{"localhost:x", "", Site{"localhost:x", "tcp/", ""}},
	} {
		if got := SiteFor(c.value, "9000", c.bindHost); got != c.want {
			t.Errorf("SiteFor(%q, bind %q) = %+v, want %+v", c.value, c.bindHost, got, c.want)
		}
	}
}

func TestTLSModeFor(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		site, cert, key string
		mode            string
		warned          []string // variables named by warnings
	}{
		{"", "", "", TLSOff, nil},
		{"", "/c.crt", "/c.key", TLSOff, []string{"SDR_TLS_CERT", "SDR_TLS_KEY"}},
		{"robot.tail0.ts.net", "", "", TLSAuto, nil},
		{"robot.tail0.ts.net", "/c.crt", "/c.key", TLSFiles, nil},
		{"robot.tail0.ts.net", "/c.crt", "", TLSFiles, []string{"SDR_TLS_KEY"}},
		{"robot.tail0.ts.net", "", "/c.key", TLSFiles, []string{"SDR_TLS_CERT"}},
		{"  ", "", "", TLSOff, nil},
	} {
		mode, ws := TLSModeFor(c.site, c.cert, c.key)
		var warned []string
		for _, w := range ws {
			if !strings.Contains(w.Message, w.Var) {
				t.Errorf("warning %q does not name %s", w.Message, w.Var)
			}
			warned = append(warned, w.Var)
		}
		if mode != c.mode || strings.Join(warned, ",") != strings.Join(c.warned, ",") {
			t.Errorf("TLSModeFor(%q, %q, %q) = %s warning about %v, want %s warning about %v", c.site, c.cert, c.key, mode, warned, c.mode, c.warned)
		}
	}
}

func TestResolveListenAddr(t *testing.T) {
	t.Parallel()
	set, warnings := Resolve(env("SDR_LISTEN_ADDR=127.0.0.1:8080", "SDR_HTTP_ADDR=:8081", "SDR_BIND_HOST=10.0.0.1"))
	want := map[string]string{
		ListenSite: "http://:8080", ListenBind: "127.0.0.1",
		HTTPSite: "http://:8081", HTTPBind: "10.0.0.1", HTTPPort: "8081",
		MetricsSite: "http://:9180", MetricsBind: "127.0.0.1",
		TLSMode: TLSOff, SiteHosts: "",
	}
	if !maps.Equal(set, want) || len(warnings) != 0 {
		t.Errorf("Resolve = %v %v, want %v and no warnings", set, warnings, want)
	}
}

func TestResolveDefaults(t *testing.T) {
	t.Parallel()
	set, warnings := Resolve(env())
	want := map[string]string{
		ListenSite: "http://:8080", ListenBind: "tcp/",
		HTTPSite: "http://:80", HTTPBind: "tcp/", HTTPPort: "80",
		// The metrics on loopback unless SDR_METRICS_ADDR says otherwise.
		MetricsSite: "http://:9180", MetricsBind: "127.0.0.1",
		TLSMode: TLSOff, SiteHosts: "",
	}
	if !maps.Equal(set, want) || len(warnings) != 0 {
		t.Errorf("Resolve of an empty environment = %v %v, want %v", set, warnings, want)
	}
	// A domain name keeps automatic HTTPS: Caddy's own http_port.
	set, _ = Resolve(env("SDR_HTTP_ADDR=robot.example.com"))
	if set[HTTPSite] != "robot.example.com" || set[HTTPPort] != "80" {
		t.Errorf("Resolve of a domain name = %v", set)
	}
}

// TestResolveReplacesDerived: a derived variable found in the environment
// (inherited from another sdr-caddy process) is computed again from the
// inputs, never kept.
func TestResolveReplacesDerived(t *testing.T) {
	t.Parallel()
	set, _ := Resolve(env("SDR_LISTEN_ADDR=:9001", "SDR_LISTEN_SITE=http://:8080", "SDR_LISTEN_BIND=127.0.0.1", "SDR_TLS_MODE=auto"))
	if set[ListenSite] != "http://:9001" || set[ListenBind] != "tcp/" || set[TLSMode] != TLSOff {
		t.Errorf("Resolve kept inherited derived values: %v", set)
	}
}

func TestResolveNormalizesOnlyWhatIsSet(t *testing.T) {
	t.Parallel()
	set, warnings := Resolve(env("SDR_CRC_ENABLED=False", "SDR_SHM_KEYFRAME_GATING=yes", "SDR_IDR_TIMEOUT_MS=abc", "SDR_IDR_COALESCE_MS=250"))
	for k, want := range map[string]string{"SDR_CRC_ENABLED": "true", "SDR_SHM_KEYFRAME_GATING": "false", "SDR_IDR_TIMEOUT_MS": "5000"} {
		if set[k] != want {
			t.Errorf("%s = %q, want %q", k, set[k], want)
		}
	}
	for _, k := range []string{"SDR_IDR_COALESCE_MS", "SDR_SHM_SIZE", "SDR_SHM_PATH"} {
		if v, ok := set[k]; ok {
			t.Errorf("%s set to %q: it was unset or already the old server's value", k, v)
		}
	}
	if len(warnings) != 1 || warnings[0].Var != "SDR_IDR_TIMEOUT_MS" {
		t.Errorf("warnings = %v, want one about SDR_IDR_TIMEOUT_MS", warnings)
	}
}

// TestSiteHosts: the names of the configured sites, for the host allowlist
// of the DNS rebinding guard; addresses that name no host add nothing.
func TestSiteHosts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addrs []string
		want  string
	}{
		{nil, ""},
		{[]string{"", ":8080", "0.0.0.0:8080", "[::]:8080", "127.0.0.1", "::1", "localhost:8080", "http://:80"}, ""},
		{[]string{"robot.example.com"}, "robot.example.com"},
		{[]string{"https://Robot.Example.com:8443/"}, "robot.example.com"},
		{[]string{"robot.example.com:8080", "amd-rtx.tail09c99.ts.net"}, "robot.example.com amd-rtx.tail09c99.ts.net"},
		{[]string{"a.example.com, b.example.com", "a.example.com"}, "a.example.com b.example.com"},
		{[]string{"*.example.com"}, "*.example.com"},
		{[]string{"http://[fd00::1]:8080", "10.0.0.5:80"}, ""},
	} {
		if got := SiteHostsFor(c.addrs...); got != c.want {
			t.Errorf("SiteHostsFor(%q) = %q, want %q", c.addrs, got, c.want)
		}
	}
	set, _ := Resolve(env("SDR_HTTP_ADDR=robot.example.com", "SDR_LISTEN_ADDR=:8080", "SDR_TLS_SITE=amd-rtx.tail09c99.ts.net", "SDR_SITE_HOSTS=inherited.example"))
	if got := set[SiteHosts]; got != "robot.example.com amd-rtx.tail09c99.ts.net" {
		t.Errorf("Resolve: %s = %q", SiteHosts, got)
	}
}

func TestDerivedCoversEveryDerivedVariable(t *testing.T) {
	t.Parallel()
	set, _ := Resolve(env())
	for k := range set {
		if _, ok := Derived[k]; !ok {
			t.Errorf("%s is derived but missing from Derived", k)
		}
	}
	if len(Derived) != len(set) {
		t.Errorf("Derived has %d variables, Resolve sets %d", len(Derived), len(set))
	}
}

// TestResolveMetricsAddr: SDR_METRICS_ADDR is read as SDR_HTTP_ADDR is; a
// port alone opens the metrics on SDR_BIND_HOST or every interface (the
// compose backplane), and empty is loopback.
func TestResolveMetricsAddr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ env, site, bind string }{
		{"SDR_METRICS_ADDR=:9180", "http://:9180", "tcp/"},
		{"SDR_METRICS_ADDR=0.0.0.0:9100", "http://:9100", "tcp4/0.0.0.0"},
		{"SDR_METRICS_ADDR=", "http://:9180", "127.0.0.1"},
		{"SDR_METRICS_ADDR=127.0.0.1:9300", "http://:9300", "127.0.0.1"},
	} {
		set, _ := Resolve(env(c.env))
		if set[MetricsSite] != c.site || set[MetricsBind] != c.bind {
			t.Errorf("%s: site %q bind %q, want %q %q", c.env, set[MetricsSite], set[MetricsBind], c.site, c.bind)
		}
	}
}
