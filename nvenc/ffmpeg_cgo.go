//go:build cgo

package nvenc

/*
#cgo pkg-config: libavcodec libavutil libswscale
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
#include <libavutil/frame.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

// sdr_fill copies caller-owned planes into a frame of the same pixel
// format, making the frame's buffers writable first (the encoder may still
// hold a reference to them).
static int sdr_fill(AVFrame *f, const uint8_t *p0, int s0, const uint8_t *p1, int s1, const uint8_t *p2, int s2) {
	int ret = av_frame_make_writable(f);
	if (ret < 0) return ret;
	const uint8_t *src[4] = {p0, p1, p2, NULL};
	int ss[4] = {s0, s1, s2, 0};
	av_image_copy(f->data, f->linesize, src, ss, f->format, f->width, f->height);
	return 0;
}

// sdr_scale converts caller-owned planes into a frame with swscale.
static int sdr_scale(struct SwsContext *c, AVFrame *f, const uint8_t *p0, int s0, const uint8_t *p1, int s1, const uint8_t *p2, int s2) {
	int ret = av_frame_make_writable(f);
	if (ret < 0) return ret;
	const uint8_t *src[4] = {p0, p1, p2, NULL};
	int ss[4] = {s0, s1, s2, 0};
	ret = sws_scale(c, src, ss, 0, f->height, f->data, f->linesize);
	return ret < 0 ? ret : 0;
}

static struct SwsContext *sdr_sws(int w, int h, int src, int dst) {
	return sws_getContext(w, h, src, w, h, dst, SWS_FAST_BILINEAR, NULL, NULL, NULL);
}

static void sdr_set_quality(AVFrame *f, int q) { f->quality = q; }

// sdr_dlopen reports whether a shared library can be loaded; on failure it
// copies dlerror() into err.
static int sdr_dlopen(const char *name, char *err, int n) {
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		if (e != NULL) { strncpy(err, e, n - 1); err[n - 1] = 0; }
		return 0;
	}
	dlclose(h);
	return 1;
}
*/
import "C"

import (
	"fmt"
	"image"
	"sync"
	"unsafe"

	"github.com/asticode/go-astiav"

	"github.com/sdr-os/sdr-caddy/frame"
)

// ffmpegVersions names the linked FFmpeg libraries.
func ffmpegVersions() map[string]string {
	v := func(n C.uint) string { return fmt.Sprintf("%d.%d.%d", n>>16, n>>8&0xff, n&0xff) }
	return map[string]string{
		"version":    C.GoString(C.av_version_info()),
		"libavcodec": v(C.avcodec_version()),
		"libavutil":  v(C.avutil_version()),
		"libswscale": v(C.swscale_version()),
	}
}

// avFrame is the C frame behind an astiav frame.
func avFrame(f *astiav.Frame) *C.AVFrame { return (*C.AVFrame)(f.UnsafePointer()) }

func planePtr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}

// fillFrame copies the planes into f, which has the picture's pixel format.
func fillFrame(f *astiav.Frame, planes [3][]byte, strides [3]int) error {
	ret := C.sdr_fill(avFrame(f),
		planePtr(planes[0]), C.int(strides[0]),
		planePtr(planes[1]), C.int(strides[1]),
		planePtr(planes[2]), C.int(strides[2]))
	if ret < 0 {
		return fmt.Errorf("copying picture into frame: %w", astiav.Error(ret))
	}
	return nil
}

// scaler converts one pixel format into another at the same size.
type scaler struct{ c *C.struct_SwsContext }

func newScaler(w, h int, src, dst astiav.PixelFormat) (*scaler, error) {
	c := C.sdr_sws(C.int(w), C.int(h), C.int(src), C.int(dst))
	if c == nil {
		return nil, fmt.Errorf("creating swscale context %s -> %s at %dx%d", src, dst, w, h)
	}
	return &scaler{c: c}, nil
}

func (s *scaler) scale(f *astiav.Frame, planes [3][]byte, strides [3]int) error {
	ret := C.sdr_scale(s.c, avFrame(f),
		planePtr(planes[0]), C.int(strides[0]),
		planePtr(planes[1]), C.int(strides[1]),
		planePtr(planes[2]), C.int(strides[2]))
	if ret < 0 {
		return fmt.Errorf("converting picture with swscale: %w", astiav.Error(ret))
	}
	return nil
}

func (s *scaler) free() {
	if s != nil && s.c != nil {
		C.sws_freeContext(s.c)
		s.c = nil
	}
}

func setQuality(f *astiav.Frame, q int) { C.sdr_set_quality(avFrame(f), C.int(q)) }

// dlopen reports whether the dynamic linker can load a library, and why not.
func dlopen(name string) (ok bool, reason string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	buf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(buf))
	*buf = 0
	if C.sdr_dlopen(cname, buf, 512) == 1 {
		return true, ""
	}
	return false, C.GoString(buf)
}

// FFmpeg's log goes through one process-wide callback. Opening encoders is
// serialized so that what FFmpeg logs while one opens can be captured and
// reported verbatim (NVENC explains its failures only there).
var (
	logOnce    sync.Once
	logMu      sync.Mutex
	logCapture *[]string
	openMu     sync.Mutex
)

func installLogCallback() {
	logOnce.Do(func() {
		astiav.SetLogLevel(astiav.LogLevelWarning)
		astiav.SetLogCallback(func(c astiav.Classer, l astiav.LogLevel, _, msg string) {
			if l > astiav.LogLevelWarning {
				return
			}
			line := msg
			if c != nil {
				if cl := c.Class(); cl != nil {
					line = "[" + cl.ItemName() + "] " + msg
				}
			}
			for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == ' ') {
				line = line[:len(line)-1]
			}
			logMu.Lock()
			if logCapture != nil && len(*logCapture) < 64 {
				*logCapture = append(*logCapture, line)
				logMu.Unlock()
				return
			}
			logMu.Unlock()
			ffmpegLog(l <= astiav.LogLevelError, line)
		})
	})
}

// capturing runs fn while collecting FFmpeg's log lines.
func capturing(fn func() error) (lines []string, err error) {
	installLogCallback()
	openMu.Lock()
	defer openMu.Unlock()
	var buf []string
	logMu.Lock()
	logCapture = &buf
	logMu.Unlock()
	err = fn()
	logMu.Lock()
	logCapture = nil
	lines = buf
	logMu.Unlock()
	return lines, err
}

// pixelFormat maps a raw codec onto FFmpeg's pixel format.
func pixelFormat(c frame.Codec) astiav.PixelFormat {
	switch c {
	case frame.CodecRGBA:
		return astiav.PixelFormatRgba
	case frame.CodecBGRA:
		return astiav.PixelFormatBgra
	case frame.CodecNV12:
		return astiav.PixelFormatNv12
	case frame.CodecI420:
		return astiav.PixelFormatYuv420P
	case frame.CodecRGB24:
		return astiav.PixelFormatRgb24
	}
	return astiav.PixelFormatNone
}

// copyYCbCr copies a 4:2:0 frame into a Go image. (astiav's ToImage of
// v0.16.0 reads chroma planes with the luma height, past their end.)
func copyYCbCr(f *astiav.Frame) *image.YCbCr {
	cf := avFrame(f)
	w, h := int(cf.width), int(cf.height)
	h2 := (h + 1) / 2
	plane := func(i, rows int) ([]byte, int) {
		ls := int(cf.linesize[i])
		if ls < 0 || cf.data[i] == nil {
			return nil, 0
		}
		return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(cf.data[i])), ls*rows)...), ls
	}
	y, ys := plane(0, h)
	cb, cs := plane(1, h2)
	cr, _ := plane(2, h2)
	return &image.YCbCr{Y: y, Cb: cb, Cr: cr, YStride: ys, CStride: cs,
		SubsampleRatio: image.YCbCrSubsampleRatio420, Rect: image.Rect(0, 0, w, h)}
}
