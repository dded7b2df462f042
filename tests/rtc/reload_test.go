package rtc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// Single-port mode with a NAT 1:1 address: every candidate of the answer
// is that address on the one UDP port, sessions work, and a config reload
// keeps the socket (the new config takes the shared engine before the old
// one gives it back) so that sessions after the reload work too.
func TestWHEPSinglePortAcrossReload(t *testing.T) {
	path, _ := playRing(t)

	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpPort := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	port := testenv.FreePort(t)
	config := func(maxSessions int) string {
		return testenv.Caddyfile(port, "", fmt.Sprintf(`	sdr_whep /whep* cam {
		source shm %s
		udp_mux 127.0.0.1:%d
		nat_1to1 127.0.0.1
		include_loopback
		max_sessions %d
	}`, path, udpPort, maxSessions))
	}
	s := &server{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, config(4), nil, nil)

	watch := func(what string) {
		t.Helper()
		v, offer := offerViewer(t, false)
		defer v.Close()
		code, answer, location := s.whepRetryingReset(t, offer)
		if code != http.StatusCreated {
			t.Fatalf("%s: whep post: %d %s", what, code, answer)
		}
		n := 0
		for _, line := range strings.Split(answer, "\r\n") {
			if !strings.HasPrefix(line, "a=candidate:") {
				continue
			}
			n++
			if f := strings.Fields(line); len(f) < 6 || f[4] != "127.0.0.1" || f[5] != fmt.Sprint(udpPort) {
				t.Errorf("%s: candidate %q, want 127.0.0.1 port %d", what, line, udpPort)
			}
		}
		if n == 0 {
			t.Fatalf("%s: answer without candidates:\n%s", what, answer)
		}
		if err := v.Accept(answer); err != nil {
			t.Fatal(err)
		}
		receiveVideo(t, v, 20)
		if code := s.delete(t, location); code != http.StatusOK {
			t.Errorf("%s: delete: %d", what, code)
		}
	}
	watch("before the reload")

	// Reload with a change that keeps the engine: the UDP socket must not
	// be bound twice.
	s.caddy.Load(t, config(5))
	watch("after the reload")
}

// whepRetryingReset posts an offer as s.whep does, again after a
// connection reset, as a WHEP client retries a POST that met a network
// error. Around a reload a fresh connection can be reset before the server
// reads it: Caddy listens with SO_REUSEPORT, so the new config opens a
// socket of its own beside the old config's, the kernel spreads new
// connections over both, and those still waiting in the old socket's
// accept queue when the old server's shutdown closes it are reset (Linux
// migrates them only with net.ipv4.tcp_migrate_req=1). Caddy's /load can
// answer before that shutdown has closed the socket. Nothing was read, so
// nothing was created: the retry is safe.
func (s *server) whepRetryingReset(t *testing.T, offer string) (code int, body, location string) {
	t.Helper()
	testwait.For(t, "a WHEP POST that is not reset", func() bool {
		resp, err := client.Post(s.base+"/whep", "application/sdp", strings.NewReader(offer))
		if errors.Is(err, syscall.ECONNRESET) {
			t.Logf("whep post: %v; retrying", err)
			return false
		}
		if err != nil {
			t.Fatalf("whep post: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body, location = resp.StatusCode, string(b), resp.Header.Get("Location")
		return true
	})
	return code, body, location
}
