//go:build unix

package connlimit

import (
	"fmt"
	"math"
	"syscall"
)

// FileLimit returns the number of file descriptors the process may have
// open (RLIMIT_NOFILE's soft limit, which Go raises to the hard limit when
// a program starts).
func FileLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur > math.MaxInt32 {
		return math.MaxInt32, nil
	}
	return int(rl.Cur), nil
}
