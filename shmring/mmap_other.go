//go:build !unix

package shmring

import (
	"errors"
	"fmt"
	"os"
)

type fileID struct {
	dev, ino uint64
	size     int64
}

type mapping struct {
	mem []byte
	id  fileID
}

var errShort = errors.New("file too short")

func statPath(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	return fileID{size: fi.Size()}, nil
}

func mapFile(path string, writable bool) (*mapping, error) {
	return nil, fmt.Errorf("mapping ring %s: %w (shared-memory rings need a unix system)", path, errors.ErrUnsupported)
}

func (m *mapping) unmap() error { return nil }
