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

// setSendQueue is Linux's TCP_NOTSENT_LOWAT; elsewhere the write budget
// alone bounds what a client takes from the hub.
func setSendQueue(syscall.RawConn, int) error { return errors.ErrUnsupported }
