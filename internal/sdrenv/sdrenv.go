// Package sdrenv reads the SDR_* environment variables as SDR_OS read them
// and derives from them the values a Caddyfile needs, for the Caddyfile's
// {$VAR} placeholders.
//
// Caddy replaces {$VAR} placeholders with the variable's text before it
// reads the Caddyfile, so a Caddyfile cannot take a value apart (the host
// from the port of 127.0.0.1:8080) nor parse it as another program did
// (SDR_CRC_ENABLED=False, which the old transport-server read as true).
// Apply does that in the process environment when the process starts,
// before any Caddyfile is read:
//
//   - The old transport-server's variables are rewritten to the value it
//     would have used: booleans by its string comparisons, numbers as
//     unsigned integers, a malformed number replaced by its default with a
//     warning naming the variable.
//   - SDR_HTTP_ADDR and SDR_LISTEN_ADDR, which may be socket addresses
//     (0.0.0.0:8080, 127.0.0.1:8080, [::]:8080, :8080), become a site address
//     without a host (http://:8080) and the interfaces to bind
//     (SDR_HTTP_SITE, SDR_HTTP_BIND, SDR_LISTEN_SITE, SDR_LISTEN_BIND), so
//     that an IP address never turns into a host matcher, automatic HTTPS or
//     a local certificate authority.
//   - SDR_METRICS_ADDR (default localhost:9180) becomes the metrics site's
//     address and interfaces the same way (SDR_METRICS_SITE,
//     SDR_METRICS_BIND).
//   - SDR_TLS_SITE, SDR_TLS_CERT and SDR_TLS_KEY select the HTTPS site
//     (SDR_TLS_MODE: off, files or auto).
//   - The host names of the sites (SDR_HTTP_ADDR, SDR_LISTEN_ADDR and
//     SDR_TLS_SITE, when they name one) become SDR_SITE_HOSTS, which the
//     Caddyfile adds to the hosts trusted to command (the DNS rebinding
//     guard of package origin).
//
// Derived variables are always computed from their inputs: a value found in
// the environment is replaced, because a process that inherited it from
// another sdr-caddy process (caddy start, a test) would otherwise keep
// values derived from someone else's inputs.
//
// The package imports nothing from Caddy.
package sdrenv

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Warning is a variable whose value was not taken as given.
type Warning struct {
	// Var is the variable.
	Var string
	// Value is its value as found.
	Value string
	// Message says what was done instead, in a sentence naming Var.
	Message string
}

func (w Warning) String() string { return w.Message }

// The derived variables, which Apply sets and a Caddyfile reads.
const (
	// HTTPSite is the edge's site address: http://:<port> for a socket
	// address in SDR_HTTP_ADDR, else SDR_HTTP_ADDR itself (a domain name:
	// automatic HTTPS).
	HTTPSite = "SDR_HTTP_SITE"
	// HTTPBind is the edge's bind arguments: the host of SDR_HTTP_ADDR, or
	// SDR_BIND_HOST, or tcp/ (every interface).
	HTTPBind = "SDR_HTTP_BIND"
	// HTTPPort is Caddy's http_port: the edge's port, where automatic HTTPS
	// redirects and answers ACME HTTP challenges; 80 when SDR_HTTP_ADDR is a
	// domain name.
	HTTPPort = "SDR_HTTP_PORT"
	// ListenSite is the transport-compatible site's address, from
	// SDR_LISTEN_ADDR as HTTPSite is from SDR_HTTP_ADDR.
	ListenSite = "SDR_LISTEN_SITE"
	// ListenBind is its bind arguments, as HTTPBind.
	ListenBind = "SDR_LISTEN_BIND"
	// MetricsSite is the metrics site's address, from SDR_METRICS_ADDR as
	// HTTPSite is from SDR_HTTP_ADDR; unset, localhost:9180.
	MetricsSite = "SDR_METRICS_SITE"
	// MetricsBind is its bind arguments, as HTTPBind.
	MetricsBind = "SDR_METRICS_BIND"
	// TLSMode selects the HTTPS site: off (SDR_TLS_SITE empty), files
	// (SDR_TLS_CERT and SDR_TLS_KEY name the certificate and key) or auto
	// (Caddy obtains the certificate).
	TLSMode = "SDR_TLS_MODE"
	// SiteHosts is the space-separated host names of the configured
	// sites: what a browser's Host header carries when it reaches this
	// machine by a site's name, which the Caddyfile adds to the host
	// allowlist.
	SiteHosts = "SDR_SITE_HOSTS"
)

// Derived maps each derived variable to the variables it is computed from.
var Derived = map[string][]string{
	HTTPSite:    {"SDR_HTTP_ADDR"},
	HTTPBind:    {"SDR_HTTP_ADDR", "SDR_BIND_HOST"},
	HTTPPort:    {"SDR_HTTP_ADDR"},
	ListenSite:  {"SDR_LISTEN_ADDR"},
	ListenBind:  {"SDR_LISTEN_ADDR", "SDR_BIND_HOST"},
	MetricsSite: {"SDR_METRICS_ADDR"},
	MetricsBind: {"SDR_METRICS_ADDR", "SDR_BIND_HOST"},
	TLSMode:     {"SDR_TLS_SITE", "SDR_TLS_CERT", "SDR_TLS_KEY"},
	SiteHosts:   {"SDR_HTTP_ADDR", "SDR_LISTEN_ADDR", "SDR_TLS_SITE"},
}

// Default ports of the sites when their variable names no port.
const (
	HTTPDefaultPort    = "80"
	ListenDefaultPort  = "8080"
	MetricsDefaultPort = "9180"
)

// MetricsDefaultAddr is SDR_METRICS_ADDR when it is unset or empty: the
// metrics are served on loopback only unless asked.
const MetricsDefaultAddr = "localhost:" + MetricsDefaultPort

// Kind is how the old transport-server read a variable (its config.rs).
type Kind int

const (
	// Verbatim: the value as given (SDR_NATS_URL; empty means sdr-caddy's
	// embedded NATS server).
	Verbatim Kind = iota
	// Text: the value as given; an empty value is replaced by the default.
	Text
	// Unsigned: an unsigned integer as Rust parses one (digits, one
	// optional leading +); anything else is replaced by the default.
	Unsigned
	// Millis: Unsigned, in milliseconds; a value longer than a Go duration
	// holds (about 292 years) is clamped to the longest one.
	Millis
	// NotFalse: true unless the value is exactly "false" or "0".
	NotFalse
	// TrueOrOne: true only when the value is exactly "true" or "1".
	TrueOrOne
	// Address: a socket address, read by SiteFor.
	Address
)

// OldVar is one environment variable of the old transport-server.
type OldVar struct {
	Name    string
	Kind    Kind
	Default string // its default there ("" for Verbatim and Address)
}

// Old lists the old transport-server's variables, as its config.rs read them.
var Old = []OldVar{
	{"SDR_SHM_PATH", Text, "/dev/shm/sdr_os_ipc/frames"},
	{"SDR_SHM_SIZE", Unsigned, "4194304"},
	{"SDR_NATS_URL", Verbatim, ""},
	{"SDR_LISTEN_ADDR", Address, ""},
	{"SDR_BROADCAST_CAPACITY", Unsigned, "64"},
	{"SDR_CRC_ENABLED", NotFalse, "true"},
	{"SDR_IDR_COALESCE_MS", Millis, "500"},
	{"SDR_IDR_TIMEOUT_MS", Millis, "5000"},
	{"SDR_TELEMETRY_SUBJECTS", Text, "telemetry.>"},
	{"SDR_TELEMETRY_MAX_SIZE", Unsigned, "65536"},
	{"SDR_VIDEO_GATE_HOLD_MS", Millis, "1000"},
	{"SDR_VIDEO_GATE_ESTOP_MS", Millis, "5000"},
	{"SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS", Millis, "2000"},
	{"SDR_SHM_KEYFRAME_GATING", TrueOrOne, "false"},
}

// maxMillis is the longest whole number of milliseconds a time.Duration
// holds.
const maxMillis = uint64(1<<63-1) / 1e6

// Normalize returns the value the old transport-server used for v, the value
// of variable o, and a warning when that is not v as given.
func Normalize(o OldVar, v string) (string, *Warning) {
	warn := func(format string, args ...any) *Warning {
		return &Warning{Var: o.Name, Value: v, Message: fmt.Sprintf(format, args...)}
	}
	switch o.Kind {
	case Text:
		if v == "" {
			return o.Default, warn("%s is empty; using the default %s", o.Name, o.Default)
		}
	case Unsigned, Millis:
		n, ok := parseUnsigned(v)
		if !ok {
			return o.Default, warn("%s=%q is not a whole number; using the default %s, as the old transport-server did", o.Name, v, o.Default)
		}
		if o.Kind == Millis && n > maxMillis {
			return strconv.FormatUint(maxMillis, 10), warn("%s=%q is longer than sdr-caddy can wait; using %d ms (about 292 years)", o.Name, v, maxMillis)
		}
		return strconv.FormatUint(n, 10), nil
	case NotFalse:
		return strconv.FormatBool(v != "false" && v != "0"), nil
	case TrueOrOne:
		return strconv.FormatBool(v == "true" || v == "1"), nil
	}
	return v, nil
}

// parseUnsigned parses v as Rust's str::parse::<u64> does: decimal digits
// with one optional leading '+', nothing else (no spaces, no sign '-').
func parseUnsigned(v string) (uint64, bool) {
	digits := strings.TrimPrefix(v, "+")
	if digits == "" || strings.HasPrefix(digits, "+") {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// Site is how a Caddyfile serves one address variable.
type Site struct {
	// Addr is the site address: http://:<port> for a port or socket
	// address, else the value unchanged (a domain name, a URL).
	Addr string
	// Bind is the bind directive's arguments, never empty: the address's
	// host, or the bind hosts, or tcp/ for every interface.
	Bind string
	// Port is the port of Addr when it is http://:<port>, else "".
	Port string
}

// SiteFor reads the value of an address variable (SDR_HTTP_ADDR,
// SDR_LISTEN_ADDR). bindHost is SDR_BIND_HOST, the interfaces for a value
// without a host; defaultPort the port when the value names none.
//
//	""                        http://:<defaultPort> on bindHost
//	:8080                     http://:8080 on bindHost
//	0.0.0.0:8080              http://:8080 on tcp4/0.0.0.0 (IPv4, every interface)
//	[::]:8080                 http://:8080 on [::] (every interface)
//	127.0.0.1:8080, [::1]:80  http://:<port> on that address
//	127.0.0.1, ::1            the same on defaultPort
//	localhost[:8080]          http://:<port> on 127.0.0.1
//	anything else             unchanged, on bindHost: a domain name means
//	                          automatic HTTPS; a malformed value is Caddy's
//	                          to refuse
func SiteFor(v, defaultPort, bindHost string) Site {
	all := strings.Join(strings.Fields(bindHost), " ")
	if all == "" {
		all = "tcp/"
	}
	v = strings.TrimSpace(v)
	plain := func(port, bind string) Site {
		return Site{Addr: "http://:" + port, Bind: bind, Port: port}
	}
	if v == "" {
		return plain(defaultPort, all)
	}
	if strings.Contains(v, "://") {
		return Site{Addr: v, Bind: all}
	}
	if port, ok := strings.CutPrefix(v, ":"); ok && isPort(port) {
		return plain(port, all)
	}
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return plain(strconv.Itoa(int(ap.Port())), bindFor(ap.Addr()))
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")); err == nil {
		return plain(defaultPort, bindFor(a))
	}
	if strings.EqualFold(v, "localhost") {
		return plain(defaultPort, "127.0.0.1")
	}
	if host, port, ok := strings.Cut(v, ":"); ok && strings.EqualFold(host, "localhost") && isPort(port) {
		return plain(port, "127.0.0.1")
	}
	return Site{Addr: v, Bind: all}
}

// bindFor is the bind argument for listening on a: 0.0.0.0 is IPv4 on every
// interface, as the old transport-server bound it (Go's "tcp" would add
// IPv6); :: is every interface.
func bindFor(a netip.Addr) string {
	switch {
	case a == netip.IPv4Unspecified():
		return "tcp4/0.0.0.0"
	case a.Is6():
		return "[" + a.String() + "]"
	default:
		return a.String()
	}
}

// isPort reports whether p is a TCP port number.
func isPort(p string) bool {
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

// TLS modes (TLSMode).
const (
	TLSOff   = "off"
	TLSFiles = "files"
	TLSAuto  = "auto"
)

// TLSModeFor selects the HTTPS site from SDR_TLS_SITE, SDR_TLS_CERT and
// SDR_TLS_KEY.
func TLSModeFor(site, cert, key string) (string, []Warning) {
	var warnings []Warning
	site = strings.TrimSpace(site)
	if site == "" {
		for _, v := range [][2]string{{"SDR_TLS_CERT", cert}, {"SDR_TLS_KEY", key}} {
			if v[1] != "" {
				warnings = append(warnings, Warning{Var: v[0], Value: v[1],
					Message: fmt.Sprintf("%s is set but SDR_TLS_SITE is not: there is no HTTPS site", v[0])})
			}
		}
		return TLSOff, warnings
	}
	if cert == "" && key == "" {
		return TLSAuto, nil
	}
	for _, v := range [][3]string{{"SDR_TLS_CERT", cert, "SDR_TLS_KEY"}, {"SDR_TLS_KEY", key, "SDR_TLS_CERT"}} {
		if v[1] == "" {
			warnings = append(warnings, Warning{Var: v[0],
				Message: fmt.Sprintf("%s is empty but %s is set: the HTTPS site needs both the certificate and the key file", v[0], v[2])})
		}
	}
	return TLSFiles, warnings
}

// SiteHostsFor returns the host names that the site addresses name,
// space-separated, each once: "robot.example.com" from
// robot.example.com, https://robot.example.com:8443 or
// robot.example.com:8080, "*.example.com" from a wildcard site. Ports,
// socket addresses, IP addresses and localhost name no host to add (an IP
// and localhost are trusted anyway); a value may list several addresses,
// separated by commas or spaces, as a Caddy site block's key does.
func SiteHostsFor(addrs ...string) string {
	var hosts []string
	seen := map[string]bool{}
	for _, v := range addrs {
		for _, a := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			if _, rest, ok := strings.Cut(a, "://"); ok {
				a = rest
			}
			a, _, _ = strings.Cut(a, "/")
			if strings.HasPrefix(a, "[") { // [v6] or [v6]:port
				continue
			}
			if h, p, ok := strings.Cut(a, ":"); ok && (p == "" || isPort(p)) {
				a = h
			}
			h := strings.ToLower(strings.TrimSuffix(a, "."))
			if h == "" || h == "localhost" || strings.Contains(h, ":") || seen[h] {
				continue
			}
			if _, err := netip.ParseAddr(h); err == nil {
				continue
			}
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	return strings.Join(hosts, " ")
}

// Resolve computes, from the variables lookup finds, the variables to set
// (normalised old values and every derived variable) and the warnings.
func Resolve(lookup func(string) (string, bool)) (map[string]string, []Warning) {
	set := map[string]string{}
	var warnings []Warning
	get := func(name string) string {
		v, _ := lookup(name)
		return v
	}
	for _, o := range Old {
		v, ok := lookup(o.Name)
		if !ok || o.Kind == Verbatim || o.Kind == Address {
			continue
		}
		n, w := Normalize(o, v)
		if w != nil {
			warnings = append(warnings, *w)
		}
		if n != v {
			set[o.Name] = n
		}
	}
	bindHost := get("SDR_BIND_HOST")
	http := SiteFor(get("SDR_HTTP_ADDR"), HTTPDefaultPort, bindHost)
	set[HTTPSite], set[HTTPBind], set[HTTPPort] = http.Addr, http.Bind, http.Port
	if http.Port == "" {
		set[HTTPPort] = HTTPDefaultPort
	}
	listen := SiteFor(get("SDR_LISTEN_ADDR"), ListenDefaultPort, bindHost)
	set[ListenSite], set[ListenBind] = listen.Addr, listen.Bind
	metricsAddr := get("SDR_METRICS_ADDR")
	if strings.TrimSpace(metricsAddr) == "" {
		metricsAddr = MetricsDefaultAddr
	}
	metrics := SiteFor(metricsAddr, MetricsDefaultPort, bindHost)
	set[MetricsSite], set[MetricsBind] = metrics.Addr, metrics.Bind
	mode, w := TLSModeFor(get("SDR_TLS_SITE"), get("SDR_TLS_CERT"), get("SDR_TLS_KEY"))
	set[TLSMode] = mode
	warnings = append(warnings, w...)
	set[SiteHosts] = SiteHostsFor(get("SDR_HTTP_ADDR"), get("SDR_LISTEN_ADDR"), get("SDR_TLS_SITE"))
	return set, warnings
}

// Apply resolves the process environment and writes the result through
// setenv (os.Setenv in a program; a test passes t.Setenv, which undoes it
// when the test ends). It returns the warnings, for the caller to log.
func Apply(setenv func(key, value string)) []Warning {
	set, warnings := Resolve(os.LookupEnv)
	for k, v := range set {
		setenv(k, v)
	}
	return warnings
}
