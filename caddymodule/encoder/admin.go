package encoder

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/nvenc"
)

func init() {
	caddy.RegisterModule(EncoderAdmin{})
}

// EncoderAdmin serves GET /sdr/encoders on the admin listener: the
// capability probe (NVIDIA driver and GPUs, NVENC libraries, the linked
// FFmpeg's encoders, a functional NVENC probe, the fallback per codec) and
// the state of every running encoder (backend in use, why a better one was
// not used, counters). The probe runs once per process; `?probe=1` runs it
// again.
type EncoderAdmin struct{}

// CaddyModule returns the Caddy module information.
func (EncoderAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sdr_encoders",
		New: func() caddy.Module { return new(EncoderAdmin) },
	}
}

// Routes returns the admin route.
func (EncoderAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/sdr/encoders", Handler: caddy.AdminHandlerFunc(serveEncoders)}}
}

// encodersReport is the JSON of GET /sdr/encoders.
type encodersReport struct {
	Probe    nvenc.ProbeReport    `json:"probe"`
	Encoders []nvenc.SessionStats `json:"encoders"`
}

var cachedProbe struct {
	sync.Mutex
	report *nvenc.ProbeReport
}

func probeOnce(r *http.Request, again bool) nvenc.ProbeReport {
	cachedProbe.Lock()
	defer cachedProbe.Unlock()
	if cachedProbe.report == nil || again {
		rep := nvenc.Probe(r.Context(), nvenc.ProbeOptions{Timeout: 20 * time.Second})
		cachedProbe.report = &rep
	}
	return *cachedProbe.report
}

func serveEncoders(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed on /sdr/encoders", r.Method)}
	}
	rep := encodersReport{Probe: probeOnce(r, r.URL.Query().Get("probe") == "1"), Encoders: []nvenc.SessionStats{}}
	for _, s := range listEncoders() {
		rep.Encoders = append(rep.Encoders, s.session.Stats())
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// Interface guards.
var _ caddy.AdminRouter = EncoderAdmin{}
