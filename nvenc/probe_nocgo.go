//go:build !cgo

package nvenc

import "context"

func probeFFmpeg(context.Context, ProbeOptions, *ProbeReport) {}
