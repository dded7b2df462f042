package recorder

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/export"
	"github.com/sdr-os/sdr-caddy/internal/recording"
)

func init() {
	caddy.RegisterModule(ExportAdmin{})
}

// running is the sdr_recorder app of the configuration that started last,
// for the admin API; nil when none records.
var running struct {
	sync.Mutex
	app *App
}

func setRunning(a *App) {
	running.Lock()
	defer running.Unlock()
	running.app = a
}

func clearRunning(a *App) {
	running.Lock()
	defer running.Unlock()
	if running.app == a {
		running.app = nil
	}
}

// runningRecording returns what the admin API needs of the running app:
// its JetStream context, stream and prefix (read under the lock: Cleanup
// clears running before it drops the recorder).
func runningRecording() (js jetstream.JetStream, stream, prefix string, ok bool) {
	running.Lock()
	defer running.Unlock()
	a := running.app
	if a == nil {
		return nil, "", "", false
	}
	r := a.Recorder()
	if r == nil {
		return nil, "", "", false
	}
	return r.JetStream(), a.Stream, a.Prefix, true
}

// ExportAdmin serves GET /sdr/export on the admin listener: the same export
// as `caddy sdr-export`, from the running recorder's JetStream connection,
// answered as a file download. Query parameters: format (mcap, the
// default, or mp4), from and to (RFC 3339, now, or a duration before now
// such as -2m; empty: the recording's start and end), video (the MP4's
// stream), stream (the JetStream stream; default the recorder's).
type ExportAdmin struct{}

// CaddyModule returns the Caddy module information.
func (ExportAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sdr_export",
		New: func() caddy.Module { return new(ExportAdmin) },
	}
}

// Routes returns the admin route.
func (ExportAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/sdr/export", Handler: caddy.AdminHandlerFunc(serveExport)}}
}

func badRequest(err error) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
}

func serveExport(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed on /sdr/export", r.Method)}
	}
	q := r.URL.Query()
	now := time.Now()
	format := strings.ToLower(q.Get("format"))
	if format == "" {
		format = "mcap"
	}
	if format != "mcap" && format != "mp4" {
		return badRequest(fmt.Errorf("format %q: want mcap or mp4", format))
	}
	from, err := export.ParseTime("from", q.Get("from"), now)
	if err != nil {
		return badRequest(err)
	}
	to, err := export.ParseTime("to", q.Get("to"), now)
	if err != nil {
		return badRequest(err)
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return badRequest(errors.New("to is before from"))
	}
	video := q.Get("video")
	if video != "" && format != "mp4" {
		return badRequest(errors.New("video chooses the stream of an mp4; an mcap holds every stream"))
	}
	js, own, prefix, ok := runningRecording()
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("no sdr_recorder is running")}
	}
	stream := q.Get("stream")
	if stream == "" {
		stream = own
	} else if err := recording.ValidateStreamName(stream); err != nil {
		return badRequest(err)
	}
	if stream == "" {
		stream = recording.DefaultStream
	}
	if _, err := js.Stream(r.Context(), stream); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("recording %q: %w", stream, err)}
	}
	dir, err := os.MkdirTemp("", "sdr-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	name := "sdr-recording." + format
	path := filepath.Join(dir, name)
	opts := recording.ReadOptions{Stream: stream, Prefix: prefix, From: from, To: to}
	st, err := export.WriteFile(r.Context(), export.FromJetStream(js, opts, nil), path, format, video)
	if errors.Is(err, export.ErrNoVideo) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	}
	if err != nil {
		return fmt.Errorf("exporting %s: %w", name, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if format == "mp4" {
		w.Header().Set("Content-Type", "video/mp4")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	if !st.First.IsZero() {
		name = "sdr-recording-" + st.First.UTC().Format("20060102T150405Z") + "." + format
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Sdr-Export-Frames", fmt.Sprint(st.Frames))
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = ExportAdmin{}
