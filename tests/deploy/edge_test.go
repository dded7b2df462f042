package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// adaptedConfig is the part of an adapted config the edge tests look at.
type adaptedConfig struct {
	Apps struct {
		HTTP struct {
			HTTPPort int `json:"http_port"`
			Servers  map[string]struct {
				Listen      []string        `json:"listen"`
				Routes      json.RawMessage `json:"routes"`
				TLSPolicies json.RawMessage `json:"tls_connection_policies"`
			} `json:"servers"`
		} `json:"http"`
		TLS json.RawMessage `json:"tls"`
		PKI json.RawMessage `json:"pki"`
	} `json:"apps"`
}

// adaptExample runs `caddy adapt` on Caddyfile.example with the SDR_*
// settings given (and no others) and returns the config and what the
// process logged.
func adaptExample(t *testing.T, env ...string) (adaptedConfig, string) {
	t.Helper()
	var cfg adaptedConfig
	out, logged, err := adaptFile(t, filepath.Join(testenv.Root(), "Caddyfile.example"), env...)
	if err != nil {
		t.Fatalf("%v: caddy adapt: %v\n%s", env, err, logged)
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("%v: %v\n%s", env, err, out)
	}
	return cfg, logged
}

// adaptFile runs `caddy adapt` on a Caddyfile: the JSON on stdout, the log
// on stderr.
func adaptFile(t *testing.T, file string, env ...string) ([]byte, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(60*time.Second))
	defer cancel()
	xdg := t.TempDir()
	cmd := exec.CommandContext(ctx, testenv.CaddyBin(t), "adapt", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(cleanEnv("XDG_CONFIG_HOME="+xdg, "XDG_DATA_HOME="+xdg), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.String(), err
}

// serverOn returns the listen addresses and routes of the one server that
// listens on port, failing the test when there is not exactly one.
func (c adaptedConfig) serverOn(t *testing.T, port string) ([]string, string) {
	t.Helper()
	var found []string
	var listen []string
	var routes string
	for name, s := range c.Apps.HTTP.Servers {
		for _, l := range s.Listen {
			if strings.HasSuffix(l, ":"+port) {
				found = append(found, name)
				listen, routes = s.Listen, string(s.Routes)
				break
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("servers on port %s: %v, want one: %+v", port, found, c.Apps.HTTP.Servers)
	}
	return listen, routes
}

// TestCaddyfileExampleAddressForms: SDR_LISTEN_ADDR in the old
// transport-server's socket-address forms and SDR_HTTP_ADDR in the same
// forms and as a port are plain HTTP where they say, for any Host: no host
// matcher (which refused Host: localhost:8080 for 0.0.0.0:8080), and no TLS
// or PKI app (with which 127.0.0.1:8080 became automatic HTTPS with a local
// CA installed into the system trust store).
func TestCaddyfileExampleAddressForms(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env    []string
		port   string   // of the site under test
		listen []string // its listen addresses
	}{
		{[]string{"SDR_LISTEN_ADDR=0.0.0.0:8080"}, "8080", []string{"tcp4/0.0.0.0:8080"}},
		{[]string{"SDR_LISTEN_ADDR=127.0.0.1:8080"}, "8080", []string{"127.0.0.1:8080"}},
		{[]string{"SDR_LISTEN_ADDR=[::]:8080"}, "8080", []string{"[::]:8080"}},
		{[]string{"SDR_LISTEN_ADDR=:8080"}, "8080", []string{":8080"}},
		{[]string{"SDR_LISTEN_ADDR=localhost:8080"}, "8080", []string{"127.0.0.1:8080"}},
		{[]string{"SDR_LISTEN_ADDR=:8080", "SDR_BIND_HOST=127.0.0.1 ::1"}, "8080", []string{"127.0.0.1:8080", "[::1]:8080"}},
		{[]string{"SDR_LISTEN_ADDR=127.0.0.1:8080", "SDR_BIND_HOST=10.0.0.1"}, "8080", []string{"127.0.0.1:8080"}},
		{nil, "8080", []string{":8080"}},
		{[]string{"SDR_HTTP_ADDR=0.0.0.0:8081"}, "8081", []string{"tcp4/0.0.0.0:8081"}},
		{[]string{"SDR_HTTP_ADDR=127.0.0.1:8081"}, "8081", []string{"127.0.0.1:8081"}},
		{[]string{"SDR_HTTP_ADDR=[::]:8081"}, "8081", []string{"[::]:8081"}},
		{[]string{"SDR_HTTP_ADDR=:8081"}, "8081", []string{":8081"}},
		{[]string{"SDR_HTTP_ADDR=127.0.0.1"}, "80", []string{"127.0.0.1:80"}},
		{nil, "80", []string{":80"}},
	} {
		cfg, _ := adaptExample(t, c.env...)
		listen, routes := cfg.serverOn(t, c.port)
		slices.Sort(listen)
		if !slices.Equal(listen, c.listen) {
			t.Errorf("%v: listens on %v, want %v", c.env, listen, c.listen)
		}
		if strings.Contains(routes, `"host":`) {
			t.Errorf("%v: the site has a host matcher: %s", c.env, routes)
		}
		if cfg.Apps.TLS != nil || cfg.Apps.PKI != nil || len(cfg.Apps.HTTP.Servers) != 3 {
			t.Errorf("%v: want the three plain HTTP sites (edge, transport, metrics) and no tls or pki app: tls %s, pki %s, servers %+v",
				c.env, cfg.Apps.TLS, cfg.Apps.PKI, cfg.Apps.HTTP.Servers)
		}
	}
	// Automatic HTTPS redirects to the edge's own port, not to :80.
	if cfg, _ := adaptExample(t, "SDR_HTTP_ADDR=127.0.0.1:8081"); cfg.Apps.HTTP.HTTPPort != 8081 {
		t.Errorf("SDR_HTTP_ADDR=127.0.0.1:8081: http_port %d, want 8081", cfg.Apps.HTTP.HTTPPort)
	}
	// A domain name keeps its meaning: automatic HTTPS on 443.
	cfg, _ := adaptExample(t, "SDR_HTTP_ADDR=robot.example.com")
	if _, routes := cfg.serverOn(t, "443"); !strings.Contains(routes, `"host":["robot.example.com"]`) {
		t.Errorf("SDR_HTTP_ADDR=robot.example.com: no site for the name on 443: %s", routes)
	}
}

// TestCaddyfileExampleTLSForms: SDR_TLS_SITE adds the HTTPS site with the
// edge's routes, with the certificate files or with Caddy obtaining one.
func TestCaddyfileExampleTLSForms(t *testing.T) {
	t.Parallel()
	site := "robot.tail0.ts.net"
	cfg, _ := adaptExample(t, "SDR_TLS_SITE="+site, "SDR_TLS_CERT=/etc/caddy/tls/robot.crt", "SDR_TLS_KEY=/etc/caddy/tls/robot.key")
	_, routes := cfg.serverOn(t, "443")
	if !strings.Contains(routes, `"host":["`+site+`"]`) || !strings.Contains(routes, `"/stream/ws"`) || !strings.Contains(routes, `"sdr_ros"`) {
		t.Errorf("HTTPS site: want the edge's routes for %s: %s", site, routes)
	}
	if tls := string(cfg.Apps.TLS); !strings.Contains(tls, `"certificate":"/etc/caddy/tls/robot.crt"`) || !strings.Contains(tls, `"key":"/etc/caddy/tls/robot.key"`) {
		t.Errorf("HTTPS site: certificate files not loaded: %s", tls)
	}
	// No files: automatic HTTPS for the name (Tailscale for *.ts.net).
	cfg, _ = adaptExample(t, "SDR_TLS_SITE="+site)
	if _, routes := cfg.serverOn(t, "443"); !strings.Contains(routes, `"host":["`+site+`"]`) {
		t.Errorf("HTTPS site without files: %s", routes)
	}
	if cfg.Apps.TLS != nil {
		t.Errorf("HTTPS site without files loads certificates: %s", cfg.Apps.TLS)
	}
	// One file without the other is an error, not another meaning of tls.
	_, logged, err := adaptFile(t, filepath.Join(testenv.Root(), "Caddyfile.example"), "SDR_TLS_SITE="+site, "SDR_TLS_CERT=/etc/caddy/tls/robot.crt")
	if !strings.Contains(logged, "SDR_TLS_KEY is empty") {
		t.Errorf("SDR_TLS_CERT without SDR_TLS_KEY: no warning naming SDR_TLS_KEY (%v):\n%s", err, logged)
	}
}

// startEdge runs Caddyfile.example on free loopback ports with the settings
// given: its admin listener, the embedded NATS server, upstreams that do not
// answer, a ring that does not exist yet. ready says when it serves.
func startEdge(t *testing.T, ready func() error, env ...string) *testenv.Caddy {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testenv.Root(), "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	closed := testenv.FreePort(t)
	base := []string{
		fmt.Sprintf("SDR_ADMIN_ADDR=127.0.0.1:%d", testenv.FreePort(t)),
		fmt.Sprintf("SDR_METRICS_ADDR=:%d", testenv.FreePort(t)),
		"SDR_NATS_URL=",
		fmt.Sprintf("SDR_NATS_EMBEDDED_ADDR=127.0.0.1:%d", testenv.FreePort(t)),
		fmt.Sprintf("SDR_ROS_UPSTREAM=ws://127.0.0.1:%d", closed),
		fmt.Sprintf("SDR_NODE_UPSTREAM=127.0.0.1:%d", closed),
		"SDR_SHM_PATH=" + filepath.Join(t.TempDir(), "frames"),
		"SDR_WEB_ROOT=" + t.TempDir(),
		"SDR_BIND_HOST=127.0.0.1",
	}
	return testenv.StartCaddy(t, string(src), append(base, env...), ready)
}

// answers is a ready check: each URL answers HTTP, whatever the status.
func answers(urls ...string) func() error {
	client := &http.Client{Timeout: testwait.Timeout(time.Second)}
	return func() error {
		for _, u := range urls {
			resp, err := client.Get(u)
			if err != nil {
				return err
			}
			resp.Body.Close()
		}
		return nil
	}
}

// getHost fetches url with the Host header host through client.
func getHost(t *testing.T, client *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

// port80Free reports whether this test may check that nothing listens on
// port 80: it could listen there itself (as root, in the test's network
// namespace) and nothing else did.
func port80Free() bool {
	l, err := net.Listen("tcp", ":80")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// accessLogged waits until the edge's access log on stdout has a line for
// path, and returns the access log lines. A request logged before it on the
// same connection is in the lines by then.
func accessLogged(t *testing.T, c *testenv.Caddy, path string) []string {
	t.Helper()
	var lines []string
	testwait.For(t, "an access log line for "+path+" on stdout", func() bool {
		lines = lines[:0]
		found := false
		sc := bufio.NewScanner(strings.NewReader(c.Stdout()))
		for sc.Scan() {
			if l := sc.Text(); strings.Contains(l, "http.log.access") {
				lines = append(lines, l)
				found = found || strings.Contains(l, `"uri": "`+path+`"`)
			}
		}
		return found
	})
	return lines
}

// TestCaddyfileExampleSocketAddresses runs Caddyfile.example with the old
// transport-server's socket addresses in SDR_LISTEN_ADDR and SDR_HTTP_ADDR:
// both sites answer plain HTTP for Host: localhost:<port>, nothing listens
// on port 80 (no automatic HTTPS redirect listener), no local CA exists, and
// the edge logs requests on stdout but not /health.
func TestCaddyfileExampleSocketAddresses(t *testing.T) {
	for _, c := range []struct{ name, http, listen string }{
		{"loopback", "127.0.0.1:%d", "127.0.0.1:%d"},
		{"all IPv4", ":%d", "0.0.0.0:%d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			check80 := port80Free()
			edge, transport := testenv.FreePort(t), testenv.FreePort(t)
			edgeURL := fmt.Sprintf("http://127.0.0.1:%d", edge)
			transportURL := fmt.Sprintf("http://127.0.0.1:%d", transport)
			// No SDR_TLS_SITE: certificate files alone make no HTTPS site
			// (these do not exist, and nothing reads them).
			noSuch := filepath.Join(t.TempDir(), "absent")
			caddy := startEdge(t, answers(edgeURL+"/health", transportURL+"/health"),
				"SDR_HTTP_ADDR="+fmt.Sprintf(c.http, edge),
				"SDR_LISTEN_ADDR="+fmt.Sprintf(c.listen, transport),
				"SDR_TLS_CERT="+noSuch+".crt", "SDR_TLS_KEY="+noSuch+".key")
			client := &http.Client{Timeout: testwait.Timeout(10 * time.Second)}

			for _, host := range []string{fmt.Sprintf("localhost:%d", transport), "robot.local"} {
				resp, body := getHost(t, client, transportURL+"/health", host)
				var health map[string]any
				if resp.StatusCode != 200 || resp.TLS != nil || json.Unmarshal([]byte(body), &health) != nil || health["status"] == nil {
					t.Errorf("transport /health with Host %s: %d %q, want the old JSON over plain HTTP", host, resp.StatusCode, body)
				}
			}
			resp, body := getHost(t, client, edgeURL+"/health", fmt.Sprintf("localhost:%d", edge))
			if resp.StatusCode != 200 || body != "OK" {
				t.Errorf("edge /health with Host localhost:%d: %d %q, want 200 OK", edge, resp.StatusCode, body)
			}
			if resp, _ := getHost(t, client, edgeURL+"/sdr/player.js", "robot.local"); resp.StatusCode != 200 {
				t.Errorf("edge /sdr/player.js with Host robot.local: %d", resp.StatusCode)
			}
			// /health and then /sdr/player.js went over one connection: the
			// second one's log line comes after the first one's.
			for _, l := range accessLogged(t, caddy, "/sdr/player.js") {
				if strings.Contains(l, `"/health"`) {
					t.Errorf("/health was logged: %s", l)
				}
			}

			if check80 {
				if conn, err := net.Dial("tcp", "127.0.0.1:80"); err == nil {
					conn.Close()
					t.Errorf("something listens on port 80 (an automatic HTTPS redirect listener)")
				}
			} else {
				t.Log("port 80 is taken or not ours to bind: not checked")
			}
			if _, err := os.Stat(filepath.Join(caddy.Dir, "data", "caddy", "pki")); err == nil {
				t.Errorf("caddy created a local certificate authority (%s)", filepath.Join(caddy.Dir, "data", "caddy", "pki"))
			}
			if !strings.Contains(caddy.Output(), "SDR_TLS_CERT is set but SDR_TLS_SITE is not") {
				t.Errorf("no warning that SDR_TLS_CERT has no effect without SDR_TLS_SITE")
			}
			// No HTTPS site: the three plain HTTP servers only.
			resp, body = getHost(t, client, "http://"+adminAddr(t, caddy)+"/config/apps", "")
			var apps struct {
				HTTP struct {
					Servers map[string]json.RawMessage `json:"servers"`
				} `json:"http"`
				TLS json.RawMessage `json:"tls"`
			}
			if err := json.Unmarshal([]byte(body), &apps); err != nil || apps.TLS != nil || len(apps.HTTP.Servers) != 3 {
				t.Errorf("running config: %v; want three servers (edge, transport, metrics) and no tls app: %s", err, body)
			}
		})
	}
}

// adminAddr returns the admin listener of a startEdge instance.
func adminAddr(t *testing.T, c *testenv.Caddy) string {
	t.Helper()
	for _, kv := range c.Cmd.Env {
		if v, ok := strings.CutPrefix(kv, "SDR_ADMIN_ADDR="); ok {
			return v
		}
	}
	t.Fatal("no SDR_ADMIN_ADDR")
	return ""
}

// writeCert writes a self-signed certificate for name and its key into dir
// and returns the two files and a pool that trusts the certificate.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestCaddyfileExampleTLSSite is SDR_OS's HTTPS site on its Tailscale name
// with certificate files: the edge's routes over HTTPS for that name (SNI),
// access logs on stdout, and no listener on :80 for automatic HTTPS.
func TestCaddyfileExampleTLSSite(t *testing.T) {
	const name = "robot.tail0.ts.net"
	check80 := port80Free()
	certFile, keyFile, pool := writeCert(t, t.TempDir(), name)
	edge, tlsPort, transport := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	client := &http.Client{
		Timeout: testwait.Timeout(10 * time.Second),
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", tlsPort))
			},
		},
	}
	base := fmt.Sprintf("https://%s:%d", name, tlsPort)
	caddy := startEdge(t, func() error {
		resp, err := client.Get(base + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	},
		fmt.Sprintf("SDR_HTTP_ADDR=:%d", edge),
		fmt.Sprintf("SDR_LISTEN_ADDR=:%d", transport),
		fmt.Sprintf("SDR_TLS_SITE=%s:%d", name, tlsPort),
		"SDR_TLS_CERT="+certFile, "SDR_TLS_KEY="+keyFile)

	resp, body := getHost(t, client, base+"/health", "")
	if resp.StatusCode != 200 || body != "OK" || resp.TLS == nil || resp.TLS.ServerName != name {
		t.Errorf("HTTPS /health = %d %q (TLS %v), want OK over TLS for %s", resp.StatusCode, body, resp.TLS != nil, name)
	}
	resp, body = getHost(t, client, base+"/sdr/player.js", "")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Errorf("HTTPS /sdr/player.js = %d %s, want the edge's player module", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, l := range accessLogged(t, caddy, "/sdr/player.js") {
		if strings.Contains(l, `"/health"`) {
			t.Errorf("/health was logged: %s", l)
		}
	}

	// The plain HTTP edge still serves the name, as SDR_OS's :80 did.
	plain := &http.Client{Timeout: testwait.Timeout(10 * time.Second)}
	resp, body = getHost(t, plain, fmt.Sprintf("http://127.0.0.1:%d/health", edge), fmt.Sprintf("%s:%d", name, edge))
	if resp.StatusCode != 200 || body != "OK" {
		t.Errorf("plain HTTP /health for %s: %d %q, want OK", name, resp.StatusCode, body)
	}
	// Automatic HTTPS puts its HTTP->HTTPS redirects for the name on the
	// edge's port (http_port), not on a listener of its own on :80.
	if check80 {
		if conn, err := net.Dial("tcp", "127.0.0.1:80"); err == nil {
			conn.Close()
			t.Errorf("something listens on port 80: automatic HTTPS belongs on the edge's port %d", edge)
		}
	}
}

// TestCaddyfileExampleOldValues: the old variables mean what the old
// transport-server made of them. SDR_IDR_TIMEOUT_MS=abc loads with its
// default and one warning naming the variable; SDR_CRC_ENABLED=False keeps
// CRC on and SDR_SHM_KEYFRAME_GATING=yes leaves gating off, as there; a
// grace of 0 is none; a path may hold spaces. A literal bad token in a
// Caddyfile is still refused.
func TestCaddyfileExampleOldValues(t *testing.T) {
	t.Parallel()
	edge := testenv.FreePort(t)
	caddy := startEdge(t, answers(fmt.Sprintf("http://127.0.0.1:%d/health", edge)),
		fmt.Sprintf("SDR_HTTP_ADDR=:%d", edge),
		fmt.Sprintf("SDR_LISTEN_ADDR=:%d", testenv.FreePort(t)),
		"SDR_IDR_TIMEOUT_MS=abc",
		"SDR_CRC_ENABLED=False",
		"SDR_SHM_KEYFRAME_GATING=yes",
		"SDR_SHM_SIZE=+4194304",
		"SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS=0")
	var warnings []string
	for _, l := range strings.Split(caddy.Output(), "\n") {
		if strings.Contains(l, "SDR_IDR_TIMEOUT_MS") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "warn") {
		t.Errorf("want one warning naming SDR_IDR_TIMEOUT_MS, got %d:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
	client := &http.Client{Timeout: testwait.Timeout(10 * time.Second)}
	_, body := getHost(t, client, "http://"+adminAddr(t, caddy)+"/config/", "")
	var streams []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "sdr_stream" {
				streams = append(streams, v)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var cfg any
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatal(err)
	}
	walk(cfg)
	if len(streams) != 2 {
		t.Fatalf("%d sdr_stream handlers in the running config, want 2: %s", len(streams), body)
	}
	for _, s := range streams {
		shm, _ := s["source"].(map[string]any)["shm"].(map[string]any)
		if s["idr_timeout"] != float64(5e9) || shm["disable_crc"] != nil || shm["keyframe_gating"] != nil || shm["size"] != float64(4194304) {
			t.Errorf("sdr_stream = %v, want idr_timeout 5s, CRC on, no keyframe gating, 4 MiB", s)
		}
	}
	if !strings.Contains(body, `"codec_grace":-1`) {
		t.Errorf("SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS=0: want no grace (-1) in %s", body)
	}

	// A path with a space was one path for the old server.
	out, logged, err := adaptFile(t, filepath.Join(testenv.Root(), "Caddyfile.example"), "SDR_SHM_PATH=/dev/shm/robot two/frames")
	if err != nil || !bytes.Contains(out, []byte(`"path":"/dev/shm/robot two/frames"`)) {
		t.Errorf("SDR_SHM_PATH with a space: %v\n%s", err, logged)
	}

	bad := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(bad, []byte(":8080 {\n\tsdr_stream {\n\t\tidr_timeout abc\n\t}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, logged, err := adaptFile(t, bad); err == nil || !strings.Contains(logged, `idr_timeout \"abc\"`) {
		t.Errorf("a literal idr_timeout abc: %v, want it refused:\n%s", err, logged)
	}
}
