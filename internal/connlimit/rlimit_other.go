//go:build !unix

package connlimit

import "errors"

// FileLimit is not known on this system.
func FileLimit() (int, error) {
	return 0, errors.New("the file descriptor limit is not known on this system")
}
