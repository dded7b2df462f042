// Package origin decides whether a browser connection may command the
// robot. Every WebSocket upgrade is accepted (viewing video or telemetry is
// harmless, and the old transport-server accepted any Origin); what a
// connection may send that changes state (0x04 commands, DataChannel
// messages, ROS publishes and service calls) depends on the verdict this
// package gives once, at the upgrade (for a WHEP session, on the POST that
// creates it).
//
// A connection is trusted when its request has no Origin header (not a
// browser), or when both of these hold:
//
//   - its Host names this machine in a way that a page elsewhere cannot
//     make a browser use (the DNS rebinding guard): an IP address, a
//     loopback name, a single-label name, a *.local or *.ts.net name, or a
//     host in the host allowlist (SDR_ALLOWED_HOSTS; the configured site
//     names are added there);
//   - its Origin's host is the request's Host or X-Forwarded-Host host (on
//     any port), or a loopback name or address, or the Origin is listed in
//     the origin allowlist (SDR_ALLOWED_ORIGINS).
//
// A page that rebinds its own name to the robot's address sends an Origin
// equal to its Host, which the second rule alone would trust; the first
// refuses it, because the name is the page's.
//
// The package imports nothing from Caddy.
package origin

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
)

// EnvVar is the environment variable that the example Caddyfile maps onto
// every module's origin allowlist; refusals name it so that an operator
// knows where to add an origin.
const EnvVar = "SDR_ALLOWED_ORIGINS"

// HostEnvVar is the environment variable that the example Caddyfile maps
// onto every module's host allowlist, named by refusals like EnvVar.
const HostEnvVar = "SDR_ALLOWED_HOSTS"

// Policy holds the allowlists of origins and hosts trusted besides those
// every policy trusts (the request's own host and loopback origins; IP
// addresses, loopback, single-label, *.local and *.ts.net hosts). The zero
// value and nil trust only those.
type Policy struct {
	origins list
	hosts   list
}

// list is an allowlist: "*", exact entries and "*" patterns, lower case.
type list struct {
	any      bool
	exact    map[string]bool
	patterns []string
}

func (l *list) add(a string) {
	switch {
	case a == "*":
		l.any = true
	case strings.Contains(a, "*"):
		l.patterns = append(l.patterns, a)
	default:
		if l.exact == nil {
			l.exact = map[string]bool{}
		}
		l.exact[a] = true
	}
}

func (l *list) has(s string) bool {
	if l.any || l.exact[s] {
		return true
	}
	for _, pat := range l.patterns {
		if glob(pat, s) {
			return true
		}
	}
	return false
}

// NewPolicy checks the allowlists and returns their policy.
//
// Each origin is "*" (every origin), an origin "scheme://host[:port]", or
// such an origin with "*" wildcards ("https://*.example.com"); matching
// ignores case and a trailing "/".
//
// Each host is "*" (every host: the DNS rebinding guard is off), a host
// name ("robot.example.com", no scheme and no port), or a name with "*"
// wildcards ("*.example.com"); matching ignores case and a trailing ".".
func NewPolicy(origins []string, hosts ...string) (*Policy, error) {
	p := &Policy{}
	for _, a := range origins {
		if err := Validate(a); err != nil {
			return nil, err
		}
		p.origins.add(normalize(a))
	}
	for _, h := range hosts {
		if err := ValidateHost(h); err != nil {
			return nil, err
		}
		p.hosts.add(hostName(h))
	}
	return p, nil
}

// Validate checks one allowlist entry.
func Validate(entry string) error {
	if entry == "*" {
		return nil
	}
	scheme, rest, ok := strings.Cut(entry, "://")
	if !ok || scheme == "" || rest == "" || strings.ContainsAny(strings.TrimSuffix(rest, "/"), "/?#") {
		return fmt.Errorf("allowed origin %q: want scheme://host[:port] (wildcards allowed) or *", entry)
	}
	return nil
}

// ValidateHost checks one host allowlist entry.
func ValidateHost(entry string) error {
	if entry == "*" {
		return nil
	}
	if entry == "" || strings.ContainsAny(entry, "/:?#@[] ") {
		return fmt.Errorf("allowed host %q: want a host name without scheme or port (robot.example.com, *.example.com) or *", entry)
	}
	return nil
}

func normalize(s string) string { return strings.ToLower(strings.TrimSuffix(s, "/")) }

// hostName returns the name in a Host header value (host[:port], [v6]:port),
// lower case, without the port, brackets and a trailing dot.
func hostName(hostport string) string {
	h := strings.TrimSpace(hostport)
	if sh, _, err := net.SplitHostPort(h); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// Verdict is the decision on one connection, made at its upgrade.
type Verdict struct {
	// Origin is the request's Origin header; empty when it had none.
	Origin string
	// Host is the name in the request's Host header when the verdict
	// refuses the connection for it (HostRefused); else empty.
	Host string
	// HostRefused says that the connection is not trusted because of its
	// Host (the DNS rebinding guard), whatever its Origin.
	HostRefused bool
	// Trusted says whether the connection may send commands.
	Trusted bool
}

// Trusted is the verdict of a connection that is not judged (in-process
// callers, tests).
var Trusted = Verdict{Trusted: true}

// Refusal is what a refused command is told: the host or the origin that
// is not trusted, and the variable that lists trusted ones.
func (v Verdict) Refusal() string {
	if v.HostRefused {
		h := v.Host
		if h == "" {
			h = "(none)"
		}
		return fmt.Sprintf("host %s not allowed; add it to %s", h, HostEnvVar)
	}
	return fmt.Sprintf("origin %s not allowed; add it to %s", v.Origin, EnvVar)
}

// Judge gives the verdict on r. A nil policy trusts no listed origin or
// host.
func (p *Policy) Judge(r *http.Request) Verdict {
	o := r.Header.Get("Origin")
	if o == "" {
		// Not a browser: it may send any Host it likes, and no page can
		// make it do anything.
		return Trusted
	}
	if !p.TrustsHost(r.Host) {
		return Verdict{Origin: o, Host: hostName(r.Host), HostRefused: true}
	}
	return Verdict{Origin: o, Trusted: p.trusts(o, r)}
}

// privateSuffixes are the domains whose names no page elsewhere can own in
// public DNS: loopback (RFC 6761), mDNS (RFC 6762), Tailscale's MagicDNS,
// and the names home routers and private networks use (.lan, RFC 8375's
// .home.arpa, and .internal, which ICANN reserved for private use).
var privateSuffixes = []string{".localhost", ".local", ".ts.net", ".lan", ".home.arpa", ".internal"}

// TrustsHost reports whether a browser connection whose request names
// hostport in its Host header may command: an IP address (v4 or v6, with
// or without a port), localhost, a single-label name (a LAN host, a
// Compose service name such as transport-server), a name under one of
// privateSuffixes (*.localhost, *.local, *.ts.net, *.lan, *.home.arpa,
// *.internal), or a listed host. A page elsewhere can make a browser send
// only a name it controls in public DNS, which none of these is. An empty
// Host is not trusted.
func (p *Policy) TrustsHost(hostport string) bool {
	h := hostName(hostport)
	switch {
	case h == "":
		return false
	case p != nil && p.hosts.has(h):
		return true
	case !strings.Contains(h, "."):
		return true // single label, localhost among them
	}
	for _, suffix := range privateSuffixes {
		if strings.HasSuffix(h, suffix) {
			return true
		}
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

func (p *Policy) trusts(o string, r *http.Request) bool {
	if p != nil && p.origins.has(normalize(o)) {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false // "null" (sandboxed, file://) and garbage
	}
	host := u.Hostname()
	if loopback(host) {
		return true
	}
	if sameHost(host, r.Host) {
		return true
	}
	// The host the browser asked for, as a proxy in front passes it on;
	// with a chain of proxies the first is the browser's.
	if fwd := r.Header.Get("X-Forwarded-Host"); fwd != "" {
		first, _, _ := strings.Cut(fwd, ",")
		if sameHost(host, strings.TrimSpace(first)) {
			return true
		}
	}
	return false
}

// sameHost compares a host name with the host of a Host header value
// (host[:port]), ignoring case, the port and a trailing dot.
func sameHost(host, hostport string) bool {
	h := hostName(hostport)
	return h != "" && h == strings.TrimSuffix(strings.ToLower(host), ".")
}

// loopback reports whether host names this machine: localhost (and its
// subdomains, which browsers resolve to loopback) or a loopback address.
func loopback(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// glob matches s against pattern, where "*" matches any run of characters.
func glob(pattern, s string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == s[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// maxLogged bounds the origins a RefusalLog remembers, so that a client
// that sends a new Origin on every request cannot grow it without end.
const maxLogged = 1024

// RefusalLog writes one log line for the first refusal of each origin.
type RefusalLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[string]struct{}
}

// NewRefusalLog returns a RefusalLog writing to log (nil: discarded).
func NewRefusalLog(log *slog.Logger) *RefusalLog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RefusalLog{log: log, seen: map[string]struct{}{}}
}

// Refused notes that what (a command, a publish) from v's connection was
// refused, and logs it when it is the first of its host or origin.
func (l *RefusalLog) Refused(v Verdict, what string) {
	key := v.Origin
	if v.HostRefused {
		key = "host " + v.Host
	}
	l.mu.Lock()
	_, seen := l.seen[key]
	full := len(l.seen) >= maxLogged
	if !seen && !full {
		l.seen[key] = struct{}{}
	}
	l.mu.Unlock()
	if seen || full {
		return
	}
	if v.HostRefused {
		l.log.Warn("refused a command from a connection whose Host is not trusted (a page may have rebound its name to this machine); viewing stays allowed. Add the host to "+HostEnvVar+" if it is a name of this machine",
			"host", v.Host, "origin", v.Origin, "what", what)
		return
	}
	l.log.Warn("refused a command from a connection whose origin is not trusted; viewing stays allowed. Add the origin to "+EnvVar+" if it is yours",
		"origin", v.Origin, "what", what)
}
