package recorder

import (
	"encoding/json"
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
	caddy.RegisterModule(RecorderAdmin{})
}

// running is the sdr_recorder app of the configuration that started last,
// for the admin API; nil when none records. paused is the admin API's
// pause, which holds across config loads: the next app starts paused.
var running struct {
	sync.Mutex
	app    *App
	paused bool
}

// setRunning makes a the running app, paused if the admin API paused the
// one before.
func setRunning(a *App) {
	running.Lock()
	defer running.Unlock()
	running.app = a
	if r := a.Recorder(); r != nil && running.paused {
		r.Pause()
	}
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
	return r.JetStream(), a.streamName(), a.Prefix, true
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

// RecorderAdmin serves the running recorder's state and its pause on the
// admin listener:
//
//	GET  /sdr/recorder         the state and counters (recorderStatus, JSON)
//	POST /sdr/recorder/pause   stop taking records until resume
//	POST /sdr/recorder/resume  record again
//
// Both POSTs answer the state after them. While paused, nothing that comes
// is recorded (video, telemetry, commands, gate transitions) and nothing
// counts as dropped; caddy_sdr_recorder_state is 4. A pause holds across
// config loads (the next configuration's recorder starts paused), not
// across a restart of the process.
type RecorderAdmin struct{}

// CaddyModule returns the Caddy module information.
func (RecorderAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sdr_recorder",
		New: func() caddy.Module { return new(RecorderAdmin) },
	}
}

// Routes returns the admin routes.
func (RecorderAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/sdr/recorder", Handler: caddy.AdminHandlerFunc(serveRecorder)},
		{Pattern: "/sdr/recorder/pause", Handler: caddy.AdminHandlerFunc(serveRecorder)},
		{Pattern: "/sdr/recorder/resume", Handler: caddy.AdminHandlerFunc(serveRecorder)},
	}
}

// recorderStatus is GET /sdr/recorder's answer.
type recorderStatus struct {
	State   string            `json:"state"`
	Stream  string            `json:"stream"`
	Prefix  string            `json:"prefix"`
	Records map[string]uint64 `json:"records"`
	Dropped map[string]uint64 `json:"dropped"`
	Frames  map[string]uint64 `json:"frames"`
	Bytes   uint64            `json:"bytes"`
	Errors  uint64            `json:"errors"`
}

func serveRecorder(w http.ResponseWriter, r *http.Request) error {
	action := strings.TrimPrefix(r.URL.Path, "/sdr/recorder")
	want := http.MethodPost
	if action == "" {
		want = http.MethodGet
	}
	if r.Method != want {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed on %s: want %s", r.Method, r.URL.Path, want)}
	}
	running.Lock()
	a := running.app
	var rec *recording.Recorder
	if a != nil {
		rec = a.Recorder()
	}
	if rec == nil {
		running.Unlock()
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("no sdr_recorder is running")}
	}
	switch action {
	case "/pause":
		running.paused = true
		rec.Pause()
	case "/resume":
		running.paused = false
		rec.Resume()
	}
	running.Unlock()
	st := rec.Stats()
	out := recorderStatus{State: st.State.String(), Stream: a.streamName(), Prefix: recording.NormPrefix(a.Prefix), Frames: st.Frames,
		Records: map[string]uint64{}, Dropped: map[string]uint64{}, Bytes: st.Bytes, Errors: st.Errors}
	for k := range st.Records {
		out.Records[recording.Kind(k).String()] = st.Records[k]
		out.Dropped[recording.Kind(k).String()] = st.Dropped[k]
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// Interface guards.
var (
	_ caddy.AdminRouter = ExportAdmin{}
	_ caddy.AdminRouter = RecorderAdmin{}
)
