package origin

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestJudge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		allowed []string
		hosts   []string
		origin  string
		host    string
		fwd     string
		trusted bool
	}{
		{name: "no Origin: not a browser", host: "robot:8080", trusted: true},
		{name: "same host and port", origin: "http://robot:8080", host: "robot:8080", trusted: true},
		{name: "same host, page on :80, socket on :8080", origin: "http://robot", host: "robot:8080", trusted: true},
		{name: "same host, other case", origin: "https://Robot.Lan", host: "robot.lan", trusted: true},
		{name: "same IPv6 host", origin: "http://[fd00::1]:3000", host: "[fd00::1]:8080", trusted: true},
		{name: "other host", origin: "http://evil.example", host: "robot:8080"},
		{name: "host is a suffix only", origin: "http://evilrobot", host: "robot:8080"},
		// SDR_OS's development server.js rewrites Host to the service name
		// and keeps the browser's Origin.
		{name: "dev proxy rewrote Host", origin: "http://devbox.lan:3000", host: "transport-server:8080"},
		{name: "dev proxy with X-Forwarded-Host", origin: "http://devbox.lan:3000", host: "transport-server:8080", fwd: "devbox.lan:3000", trusted: true},
		{name: "X-Forwarded-Host chain: the first is the browser's", origin: "http://devbox.lan:3000", host: "transport-server:8080", fwd: "devbox.lan, proxy.internal", trusted: true},
		{name: "X-Forwarded-Host chain: a later one is not", origin: "http://proxy.internal", host: "transport-server:8080", fwd: "devbox.lan, proxy.internal"},
		{name: "X-Forwarded-Host of another host", origin: "http://evil.example", host: "transport-server:8080", fwd: "devbox.lan:3000"},
		{name: "localhost page behind a Host rewrite", origin: "http://localhost:3000", host: "transport-server:8080", trusted: true},
		{name: "localhost subdomain", origin: "http://app.localhost:5173", host: "robot", trusted: true},
		{name: "127.0.0.1", origin: "http://127.0.0.1:3000", host: "robot", trusted: true},
		{name: "127.8.9.10", origin: "http://127.8.9.10", host: "robot", trusted: true},
		{name: "::1", origin: "http://[::1]:3000", host: "robot", trusted: true},
		{name: "localhost.evil.example is not loopback", origin: "http://localhost.evil.example", host: "robot"},
		{name: "null origin", origin: "null", host: "robot"},
		{name: "garbage origin", origin: "::not a url", host: "robot"},
		{name: "listed", allowed: []string{"https://app.example.com"}, origin: "https://app.example.com", host: "robot", trusted: true},
		{name: "listed, other case and slash", allowed: []string{"HTTPS://App.Example.com/"}, origin: "https://app.example.com", host: "robot", trusted: true},
		{name: "listed with another port", allowed: []string{"https://app.example.com"}, origin: "https://app.example.com:8443", host: "robot"},
		{name: "listed with another scheme", allowed: []string{"https://app.example.com"}, origin: "http://app.example.com", host: "robot"},
		{name: "wildcard", allowed: []string{"https://*.example.com"}, origin: "https://ops.example.com", host: "robot", trusted: true},
		{name: "wildcard, other domain", allowed: []string{"https://*.example.com"}, origin: "https://example.org", host: "robot"},
		{name: "star", allowed: []string{"*"}, origin: "http://evil.example", host: "robot", trusted: true},
		{name: "star trusts null", allowed: []string{"*"}, origin: "null", host: "robot", trusted: true},
		// The DNS rebinding guard: a page on evil.example that rebound its
		// name to the robot's address sends Host and Origin evil.example.
		{name: "rebound name", origin: "http://evil.example", host: "evil.example"},
		{name: "rebound name with port", origin: "http://evil.example:8080", host: "evil.example:8080"},
		{name: "rebound name, origin listed", allowed: []string{"http://evil.example"}, origin: "http://evil.example", host: "evil.example"},
		{name: "rebound name, every origin listed", allowed: []string{"*"}, origin: "http://evil.example", host: "evil.example"},
		{name: "listed host", hosts: []string{"robot.example.com"}, origin: "https://robot.example.com", host: "robot.example.com", trusted: true},
		{name: "listed host, other case, port and trailing dot", hosts: []string{"Robot.Example.com"}, origin: "https://robot.example.com:8443", host: "ROBOT.example.com.:8443", trusted: true},
		{name: "wildcard host", hosts: []string{"*.example.com"}, origin: "https://ops.example.com", host: "ops.example.com", trusted: true},
		{name: "wildcard host, other domain", hosts: []string{"*.example.com"}, origin: "https://example.org", host: "example.org"},
		{name: "every host", hosts: []string{"*"}, origin: "http://evil.example", host: "evil.example", trusted: true},
		{name: "every host, origin still judged", hosts: []string{"*"}, origin: "http://other.example", host: "evil.example"},
		{name: "mDNS name", origin: "http://robot.local", host: "robot.local", trusted: true},
		{name: "Tailscale name", origin: "https://robot.tail1.ts.net", host: "robot.tail1.ts.net", trusted: true},
		{name: "router name", origin: "http://robot.lan:8080", host: "robot.lan:8080", trusted: true},
		{name: "home.arpa name", origin: "http://robot.home.arpa", host: "robot.home.arpa", trusted: true},
		{name: "IPv4 with port", origin: "http://192.168.1.5:8080", host: "192.168.1.5:8080", trusted: true},
		{name: "IPv6 without port", origin: "http://[fd00::1]", host: "[fd00::1]", trusted: true},
		{name: "dev proxy service name", origin: "http://localhost:3000", host: "transport-server:8080", trusted: true},
		{name: "ts.net lookalike", origin: "http://robot.ts.net.evil.example", host: "robot.ts.net.evil.example"},
		{name: "local lookalike", origin: "http://evil-local", host: "evil.example.localx"},
		{name: "empty Host", origin: "http://robot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewPolicy(tc.allowed, tc.hosts...)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/stream/ws", nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.fwd != "" {
				r.Header.Set("X-Forwarded-Host", tc.fwd)
			}
			v := p.Judge(r)
			if v.Trusted != tc.trusted || v.Origin != tc.origin {
				t.Fatalf("verdict %+v, want trusted %v for origin %q", v, tc.trusted, tc.origin)
			}
			if v.HostRefused && v.Trusted {
				t.Fatalf("verdict %+v: trusted although its host is refused", v)
			}
		})
	}
}

func TestNilPolicyTrustsOwnHostOnly(t *testing.T) {
	t.Parallel()
	var p *Policy
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "robot"
	r.Header.Set("Origin", "http://robot:3000")
	if !p.Judge(r).Trusted {
		t.Fatal("own host not trusted")
	}
	r.Header.Set("Origin", "http://evil.example")
	if p.Judge(r).Trusted {
		t.Fatal("other host trusted")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"*", "https://app.example.com", "http://localhost:3000/", "https://*.example.com"} {
		if err := Validate(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "app.example.com", "https://", "https://app.example.com/path", "://x"} {
		if _, err := NewPolicy([]string{bad}); err == nil || !strings.Contains(err.Error(), "scheme://host") {
			t.Errorf("%q: error %v, want one naming the form", bad, err)
		}
	}
	for _, ok := range []string{"*", "robot.example.com", "*.example.com", "robot"} {
		if err := ValidateHost(ok); err != nil {
			t.Errorf("host %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "https://robot.example.com", "robot.example.com:8443", "robot/x", "[::1]"} {
		if _, err := NewPolicy(nil, bad); err == nil || !strings.Contains(err.Error(), "without scheme or port") {
			t.Errorf("host %q: error %v, want one naming the form", bad, err)
		}
	}
}

// TestRebindingRefusalNamesTheHost: the verdict on a rebound name says
// which host and where to add it; the Origin rule is not consulted.
func TestRebindingRefusalNamesTheHost(t *testing.T) {
	t.Parallel()
	p, err := NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/stream/ws", nil)
	r.Host = "Evil.Example:8080"
	r.Header.Set("Origin", "http://evil.example:8080")
	v := p.Judge(r)
	if v.Trusted || !v.HostRefused || v.Host != "evil.example" {
		t.Fatalf("verdict %+v, want the host evil.example refused", v)
	}
	if got, want := v.Refusal(), "host evil.example not allowed; add it to SDR_ALLOWED_HOSTS"; got != want {
		t.Fatalf("refusal %q, want %q", got, want)
	}
	// A client that is not a browser (no Origin) is judged as before.
	r.Header.Del("Origin")
	if !p.Judge(r).Trusted {
		t.Fatal("a request without Origin is not trusted")
	}
}

func TestRefusalNamesTheVariable(t *testing.T) {
	t.Parallel()
	v := Verdict{Origin: "http://evil.example"}
	if got, want := v.Refusal(), "origin http://evil.example not allowed; add it to SDR_ALLOWED_ORIGINS"; got != want {
		t.Fatalf("refusal %q, want %q", got, want)
	}
}

func TestRefusalLogOncePerOrigin(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := NewRefusalLog(slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		l.Refused(Verdict{Origin: "http://a.example"}, "command estop")
		l.Refused(Verdict{Origin: "http://b.example"}, "command pause")
		l.Refused(Verdict{Origin: "http://a.example", Host: "a.example", HostRefused: true}, "command pause")
	}
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 3 {
		t.Fatalf("%d log lines for two origins and one host refused three times each, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "host=a.example") || !strings.Contains(out, HostEnvVar) {
		t.Fatalf("log lacks the refused host or its variable:\n%s", out)
	}
	if !strings.Contains(out, "origin=http://a.example") || !strings.Contains(out, EnvVar) {
		t.Fatalf("log lacks the origin or the variable:\n%s", out)
	}
	// A flood of new origins is bounded.
	for i := range 2 * maxLogged {
		l.Refused(Verdict{Origin: fmt.Sprintf("http://o%d.example", i)}, "x")
	}
	l.mu.Lock()
	n := len(l.seen)
	l.mu.Unlock()
	if n > maxLogged {
		t.Fatalf("%d origins remembered, over the bound %d", n, maxLogged)
	}
}
