//go:build !linux

package hub

import (
	"errors"
	"net"
	"syscall"
)

// directSupported: elsewhere every write goes through the client's
// goroutine.
const directSupported = false

type directWriter struct{}

func (directWriter) write(syscall.RawConn, net.Buffers) (int, error) {
	return 0, errors.ErrUnsupported
}
