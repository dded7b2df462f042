//go:build unix

package shmring

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// fileID identifies one file behind a path: a recreated file has a new inode.
type fileID struct {
	dev, ino uint64
	size     int64
}

func statID(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev = uint64(st.Dev) //nolint:unconvert // int32 on some platforms
		id.ino = uint64(st.Ino) //nolint:unconvert
	}
	return id
}

// statPath stats path; errors.Is(err, fs.ErrNotExist) when it is absent.
func statPath(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	if err := requireRegular(path, fi.Mode()); err != nil {
		return fileID{}, err
	}
	return statID(fi), nil
}

// requireRegular returns an error wrapping ErrNotRegular, naming path and
// what it is, unless mode is a regular file's.
func requireRegular(path string, mode fs.FileMode) error {
	if mode.IsRegular() {
		return nil
	}
	kind := "special file (mode " + mode.String() + ")"
	switch {
	case mode&fs.ModeNamedPipe != 0:
		kind = "named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		kind = "socket"
	case mode&fs.ModeCharDevice != 0:
		kind = "character device"
	case mode&fs.ModeDevice != 0:
		kind = "block device"
	case mode.IsDir():
		kind = "directory"
	case mode&fs.ModeSymlink != 0:
		kind = "symbolic link"
	}
	return fmt.Errorf("ring %s is a %s, not a regular file: %w", path, kind, ErrNotRegular)
}

// mapping is one read-only or read-write shared mapping of a ring file.
type mapping struct {
	mem []byte
	id  fileID
}

// mapFile maps the whole file at path. The size is taken from the open file,
// so a file replaced between a stat and the open is still mapped whole.
//
// Only a regular file is opened, symbolic links followed: opening a FIFO
// for reading blocks until a writer opens it (a reader that did so never
// stopped), and opening a device can act on it. The path is looked at
// first; the open is non-blocking and takes no controlling terminal, so
// that a FIFO or device put there in between is refused after the open
// without waiting.
func mapFile(path string, writable bool) (*mapping, error) {
	flag, prot := os.O_RDONLY, syscall.PROT_READ
	if writable {
		flag, prot = os.O_RDWR, syscall.PROT_READ|syscall.PROT_WRITE
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("opening ring %s: %w", path, err)
	}
	if err := requireRegular(path, fi.Mode()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening ring %s: %w", path, err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("stat of ring %s: %w", path, err)
	}
	if err := requireRegular(path, fi.Mode()); err != nil {
		return nil, err
	}
	id := statID(fi)
	if id.size < OffPayload {
		return nil, fmt.Errorf("ring %s holds %d bytes, need at least %d: %w", path, id.size, OffPayload, errShort)
	}
	if id.size > maxMapSize {
		return nil, fmt.Errorf("ring %s holds %d bytes, more than the %d this package maps", path, id.size, int64(maxMapSize))
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, int(id.size), prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping ring %s (%d bytes): %w", path, id.size, err)
	}
	return &mapping{mem: mem, id: id}, nil
}

func (m *mapping) unmap() error {
	if m == nil || m.mem == nil {
		return nil
	}
	err := syscall.Munmap(m.mem)
	m.mem = nil
	return err
}

var errShort = errors.New("file too short")
