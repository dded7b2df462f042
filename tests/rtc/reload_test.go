package rtc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// Single-port mode with a NAT 1:1 address: every candidate of the answer
// is that address on the one UDP port, sessions work, and a config reload
// keeps the socket (the new config takes the shared engine before the old
// one gives it back) so that sessions after the reload work too.
func TestWHEPSinglePortAcrossReload(t *testing.T) {
	path := ringPath(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	playRing(ctx, t, path)

	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpPort := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	port := testenv.FreePort(t)
	config := func(maxSessions int) string {
		return fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	grace_period 1ns
}
http://127.0.0.1:%d {
	sdr_whep /whep* cam {
		source shm %s
		udp_mux 127.0.0.1:%d
		nat_1to1 127.0.0.1
		include_loopback
		max_sessions %d
	}
}
`, port, path, udpPort, maxSessions)
	}
	s := &server{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, config(4), nil, nil)

	watch := func(what string) {
		t.Helper()
		v, err := rtctest.NewViewer(false)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		octx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		offer, err := v.Offer(octx)
		if err != nil {
			t.Fatal(err)
		}
		code, answer, location := s.whep(t, "application/sdp", offer)
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
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.caddy.AdminAddr+"/load", strings.NewReader(config(5)))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %d %s", resp.StatusCode, body)
	}
	watch("after the reload")
}
