package harness

import (
	"fmt"
	"net"
	"sync"
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// it has not returned before in this process: the kernel may hand the same
// port out twice in a row (it did: a Caddy's admin and site listeners met
// on one port).
func FreePort() (int, error) { return ports.next(kernelPort) }

// MustFreePort is FreePort for a benchmark's set-up, where no free port is
// fatal: it panics.
func MustFreePort() int {
	p, err := FreePort()
	if err != nil {
		panic(err)
	}
	return p
}

// kernelPort is a port the kernel picks for a loopback listener, closed
// again at once.
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portSet holds the ports handed out in this process.
type portSet struct{ given sync.Map }

var ports portSet

// next returns the first port from pick that the set has not handed out.
func (s *portSet) next(pick func() (int, error)) (int, error) {
	for {
		port, err := pick()
		if err != nil {
			return 0, err
		}
		if _, taken := s.given.LoadOrStore(port, true); !taken {
			return port, nil
		}
	}
}
