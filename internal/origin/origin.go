// Package origin decides whether a browser connection may command the
// robot. Every WebSocket upgrade is accepted (viewing video or telemetry is
// harmless, and the old transport-server accepted any Origin); what a
// connection may send that changes state (0x04 commands, DataChannel
// messages, ROS publishes and service calls) depends on the verdict this
// package gives once, at the upgrade.
//
// A connection is trusted when its request has no Origin header (not a
// browser), or its Origin's host is the request's Host or X-Forwarded-Host
// host (on any port), or a loopback name or address, or the Origin is
// listed in the allowlist (SDR_ALLOWED_ORIGINS).
//
// The package imports nothing from Caddy.
package origin

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// EnvVar is the environment variable that the example Caddyfile maps onto
// every module's allowlist; refusals name it so that an operator knows
// where to add an origin.
const EnvVar = "SDR_ALLOWED_ORIGINS"

// Policy is the allowlist of origins trusted besides the request's own host
// and loopback origins. The zero value and nil trust only those.
type Policy struct {
	any      bool
	exact    map[string]bool
	patterns []string
}

// NewPolicy checks the allowlist and returns its policy. Each entry is "*"
// (every origin), an origin "scheme://host[:port]", or such an origin with
// "*" wildcards ("https://*.example.com"). Matching ignores case and a
// trailing "/".
func NewPolicy(allowed []string) (*Policy, error) {
	p := &Policy{exact: map[string]bool{}}
	for _, a := range allowed {
		if err := Validate(a); err != nil {
			return nil, err
		}
		a = normalize(a)
		switch {
		case a == "*":
			p.any = true
		case strings.Contains(a, "*"):
			p.patterns = append(p.patterns, a)
		default:
			p.exact[a] = true
		}
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

func normalize(s string) string { return strings.ToLower(strings.TrimSuffix(s, "/")) }

// Verdict is the decision on one connection, made at its upgrade.
type Verdict struct {
	// Origin is the request's Origin header; empty when it had none.
	Origin string
	// Trusted says whether the connection may send commands.
	Trusted bool
}

// Trusted is the verdict of a connection that is not judged (in-process
// callers, tests).
var Trusted = Verdict{Trusted: true}

// Refusal is what a refused command is told: the origin and the variable
// that lists trusted ones.
func (v Verdict) Refusal() string {
	return fmt.Sprintf("origin %s not allowed; add it to %s", v.Origin, EnvVar)
}

// Judge gives the verdict on r. A nil policy trusts no listed origin.
func (p *Policy) Judge(r *http.Request) Verdict {
	o := r.Header.Get("Origin")
	if o == "" {
		return Trusted // not a browser
	}
	return Verdict{Origin: o, Trusted: p.trusts(o, r)}
}

func (p *Policy) trusts(o string, r *http.Request) bool {
	if p != nil && (p.any || p.listed(normalize(o))) {
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

func (p *Policy) listed(o string) bool {
	if p.exact[o] {
		return true
	}
	for _, pat := range p.patterns {
		if glob(pat, o) {
			return true
		}
	}
	return false
}

// sameHost compares a host name with the host of a Host header value
// (host[:port]), ignoring case and the port.
func sameHost(host, hostport string) bool {
	if hostport == "" {
		return false
	}
	h := hostport
	if sh, _, err := net.SplitHostPort(hostport); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.EqualFold(h, host)
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
// refused, and logs it when it is the origin's first.
func (l *RefusalLog) Refused(v Verdict, what string) {
	l.mu.Lock()
	_, seen := l.seen[v.Origin]
	full := len(l.seen) >= maxLogged
	if !seen && !full {
		l.seen[v.Origin] = struct{}{}
	}
	l.mu.Unlock()
	if seen || full {
		return
	}
	l.log.Warn("refused a command from a connection whose origin is not trusted; viewing stays allowed. Add the origin to "+EnvVar+" if it is yours",
		"origin", v.Origin, "what", what)
}
