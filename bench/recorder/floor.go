package main

// The physical floor: the recorder's bytes appended to a plain file.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/sdr-os/sdr-caddy/shmring"
)

// floorResult is the CPU a plain file took for the recording's bytes over
// one window: the writes alone, and the fdatasyncs beside them.
type floorResult struct {
	write, sync time.Duration
	bytes       int64
}

// threadCPU is the calling OS thread's CPU time (user and system).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// floor appends what the recorder stores of each frame (its 32-byte
// header and payload, the same sizes and cadence as the writer's) to a new
// file at path until ctx ends, with an fdatasync every syncEvery, and
// returns the CPU its write and fdatasync calls took on their own thread.
// It is the least a recording of this stream can cost on this machine.
func floor(ctx context.Context, path string, fps, gop int, syncEvery time.Duration) (floorResult, error) {
	var res floorResult
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return res, fmt.Errorf("floor file: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	key := make([]byte, shmring.HeaderSize+keyBytes)
	delta := make([]byte, shmring.HeaderSize+deltaBytes)
	_, _ = rand.Read(key)
	_, _ = rand.Read(delta)
	period := time.Second / time.Duration(fps)
	next, lastSync := time.Now(), time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		b := delta
		if i%gop == 0 {
			b = key
		}
		binary.LittleEndian.PutUint64(b[8:], uint64(i+1))
		c0 := threadCPU()
		n, err := f.Write(b)
		c1 := threadCPU()
		res.write += c1 - c0
		res.bytes += int64(n)
		if err != nil {
			return res, fmt.Errorf("floor file: %w", err)
		}
		if time.Since(lastSync) >= syncEvery {
			lastSync = time.Now()
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				return res, fmt.Errorf("floor file: fdatasync: %w", err)
			}
			res.sync += threadCPU() - c1
		}
		next = next.Add(period)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now()
		}
	}
	return res, nil
}
