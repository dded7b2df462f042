//go:build !cgo

package nvenc

import (
	"errors"
	"image"

	"github.com/sdr-os/sdr-caddy/frame"
)

// Compiled reports whether this build can encode; this one was built
// without cgo and cannot.
const Compiled = false

// Encoder is absent from a build without cgo: Open always fails with
// ErrNotCompiled.
type Encoder struct{ cfg Config }

// Open fails with ErrNotCompiled: encoding is not compiled in.
func Open(cfg Config) (*Encoder, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrNotCompiled
}

// ErrPictureMismatch is returned by Encode for a picture whose format or
// size is not the encoder's.
var ErrPictureMismatch = errors.New("picture format or size differs from the encoder's")

// Config is the configuration the encoder runs with.
func (e *Encoder) Config() Config { return e.cfg }

// Backend is empty: there is none.
func (e *Encoder) Backend() string { return "" }

// Attempts is empty: nothing was tried.
func (e *Encoder) Attempts() []Attempt { return nil }

// SPSPatched is false: nothing was encoded.
func (e *Encoder) SPSPatched() bool { return false }

// Encode fails with ErrNotCompiled.
func (e *Encoder) Encode(Picture, bool) ([]Packet, error) { return nil, ErrNotCompiled }

// Close does nothing.
func (e *Encoder) Close() {}

// Decoder is absent from a build without cgo: NewDecoder always fails.
type Decoder struct{}

// NewDecoder fails with ErrNotCompiled.
func NewDecoder(frame.Codec) (*Decoder, error) { return nil, ErrNotCompiled }

// Decode fails with ErrNotCompiled.
func (d *Decoder) Decode([]byte) ([]*image.YCbCr, error) { return nil, ErrNotCompiled }

// Flush fails with ErrNotCompiled.
func (d *Decoder) Flush() ([]*image.YCbCr, error) { return nil, ErrNotCompiled }

// Close does nothing.
func (d *Decoder) Close() {}
