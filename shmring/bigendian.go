//go:build armbe || arm64be || m68k || mips || mips64 || mips64p32 || ppc || ppc64 || s390 || s390x || shbe || sparc || sparc64

package shmring

// The ring is little-endian and its control fields are read with sync/atomic,
// which uses the machine's byte order: this package does not build on
// big-endian machines rather than misread the ring.
var _ = shmringNeedsALittleEndianMachine
