//go:build !cgo

package mp4

// compiled reports whether this build can write MP4 files; this one was
// built without cgo and cannot.
const compiled = false

// muxer is absent from a build without cgo; NewWriter fails before one is
// needed.
type muxer struct{}

func openMuxer(string, int, int, []byte) (*muxer, error) { return nil, ErrNotCompiled }

func (*muxer) write(int64, int64, bool, []byte) error { return ErrNotCompiled }

func (*muxer) finish() error { return ErrNotCompiled }

func (*muxer) free() {}
