package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// no other caller has been given, in this process or in another one that
// uses FreePort (the test packages of one `go test ./...` run side by side).
//
// A port the kernel picks for a listener on port 0 is no good for that: it
// comes from the ephemeral range, from which the kernel also picks the
// source port of every outgoing connection and the port of every other
// process's port-0 listener, so between the pick and the bind it can be
// taken (it was: a nats-server of another package took the port given to a
// Caddy's admin listener). FreePort hands out ports from below (or above)
// the ephemeral range instead, in blocks: each process claims a block by
// holding an exclusive flock(2) on a file named after it in a directory
// under os.TempDir, so no two processes share one, and the kernel releases
// the claim when the process ends, however it ends. Within its block a
// process hands each port out once, skipping those something else listens
// on. Where no lock directory or no room outside the ephemeral range is to
// be had, FreePort falls back to kernel-picked ports, never the same twice
// in this process.
func FreePort() (int, error) { return ports.take() }

// MustFreePort is FreePort for a benchmark's set-up, where no free port is
// fatal: it panics.
func MustFreePort() int {
	p, err := FreePort()
	if err != nil {
		panic(err)
	}
	return p
}

// portBlock is how many ports a process claims at a time: more than any
// test package uses, so most claim one block.
const portBlock = 200

// lowestPort is where the reserved range starts: above the ports that
// services on a development machine commonly listen on.
const lowestPort = 10000

var ports = &portAllocator{}

// portAllocator hands out ports from the blocks it holds.
type portAllocator struct {
	mu       sync.Mutex
	ready    bool
	dir      string // the lock files' directory; "" until ready
	lo, hi   int    // the reserved range, inclusive
	fallback error  // why ports come from the kernel instead, if they do
	held     []*os.File
	next     int // next port of the current block
	end      int // end of the current block (exclusive)
	given    portSet
}

// take returns the next free port of the allocator's blocks.
func (a *portAllocator) take() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		a.setUp()
	}
	if a.fallback != nil {
		return a.given.next(kernelPort)
	}
	for {
		if a.next >= a.end {
			if err := a.claim(); err != nil {
				return 0, err
			}
		}
		p := a.next
		a.next++
		if bindable(p) {
			return p, nil
		}
	}
}

// setUp finds the reserved range and the lock directory, or the reason to
// fall back to kernel-picked ports.
func (a *portAllocator) setUp() {
	a.ready = true
	if a.dir == "" {
		a.dir = filepath.Join(os.TempDir(), fmt.Sprintf("sdr-caddy-ports-%d", os.Getuid()))
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		a.fallback = fmt.Errorf("port lock directory: %w", err)
		return
	}
	if a.lo == 0 {
		ephLo, ephHi, err := ephemeralRange()
		if err != nil {
			a.fallback = err
			return
		}
		var ok bool
		if a.lo, a.hi, ok = reservedRange(ephLo, ephHi); !ok {
			a.fallback = fmt.Errorf("no room for port blocks outside the ephemeral range %d-%d", ephLo, ephHi)
		}
	}
}

// claim takes the lock of a block no other process holds, starting at a
// random one so that processes starting together rarely try the same.
func (a *portAllocator) claim() error {
	n := (a.hi - a.lo + 1) / portBlock
	first := rand.IntN(n)
	for i := range n {
		lo := a.lo + (first+i)%n*portBlock
		f, err := os.OpenFile(filepath.Join(a.dir, strconv.Itoa(lo)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("claiming a port block: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return fmt.Errorf("claiming port block %d: %w", lo, err)
		}
		a.held = append(a.held, f) // open, and so locked, until the process ends
		a.next, a.end = lo, lo+portBlock
		return nil
	}
	return fmt.Errorf("all %d port blocks of %d-%d are held by other processes (lock files in %s)", n, a.lo, a.hi, a.dir)
}

// release gives the allocator's blocks back (tests only: a process's blocks
// are released when it ends).
func (a *portAllocator) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.held {
		f.Close()
	}
	a.held, a.next, a.end = nil, 0, 0
}

// reservedRange is where the port blocks lie: below the ephemeral range
// ephLo-ephHi, from lowestPort, or else above it, whichever holds at least
// a few blocks.
func reservedRange(ephLo, ephHi int) (lo, hi int, ok bool) {
	const room = 4 * portBlock
	if ephLo-lowestPort >= room {
		return lowestPort, ephLo - 1, true
	}
	if 65535-ephHi >= room {
		return ephHi + 1, 65535, true
	}
	return 0, 0, false
}

// ephemeralRange is the kernel's range of ports for port-0 binds and
// outgoing connections.
func ephemeralRange() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, fmt.Errorf("the ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		lo, err1 := strconv.Atoi(f[0])
		hi, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && 0 < lo && lo <= hi && hi <= 65535 {
			return lo, hi, nil
		}
	}
	return 0, 0, fmt.Errorf("the ephemeral port range: cannot parse %q", b)
}

// bindable reports whether a loopback listener can take port p now.
func bindable(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
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
