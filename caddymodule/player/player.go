// Package player is the sdr_player handler: the browser player, embedded in
// the binary, served at a route of the site.
package player

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sdr-os/sdr-caddy/web"
)

func init() {
	caddy.RegisterModule(Player{})
}

// Player serves the browser player embedded in the binary: the demo page
// at the handler's root (`/` and `/index.html`) and the player's ES modules
// under `/sdr/` (`/sdr/player.js`, `/sdr/controls.js`, `/sdr/app.js`,
// `/sdr/player.css`), so that other pages can
// `import { Player } from '/sdr/player.js'`. Requests for any other path go
// to the next handler; an unknown file under `/sdr/` is a 404. The files need
// nothing on disk.
type Player struct {
	// StreamURL is the WebSocket the demo page connects to: a path on the
	// same origin (`/stream/ws`, the default) or an absolute `ws://` or
	// `wss://` URL. A `?ws=` query parameter on the page overrides it.
	StreamURL string `json:"stream_url,omitempty"`

	files map[string]playerFile
}

type playerFile struct {
	body  []byte
	ctype string
	etag  string
}

// CaddyModule returns the Caddy module information.
func (Player) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sdr_player",
		New: func() caddy.Module { return new(Player) },
	}
}

// Provision reads the embedded files and puts the stream URL into the page.
func (p *Player) Provision(caddy.Context) error {
	files, err := playerFiles(p.StreamURL)
	if err != nil {
		return err
	}
	p.files = files
	return nil
}

// Validate checks the stream URL.
func (p *Player) Validate() error {
	return validStreamURL(p.StreamURL)
}

func validStreamURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("sdr_player: stream_url %q: %w", s, err)
	}
	switch {
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/"):
	case (u.Scheme == "ws" || u.Scheme == "wss") && u.Host != "":
	default:
		return fmt.Errorf("sdr_player: stream_url %q: want a path starting with / or a ws:// or wss:// URL", s)
	}
	return nil
}

// ServeHTTP serves the page and the modules, or hands the request on.
func (p *Player) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	name, ours := playerPath(r.URL.Path)
	if !ours {
		return next.ServeHTTP(w, r)
	}
	f, ok := p.files[name]
	if !ok {
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("sdr_player: no file %q", r.URL.Path))
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("sdr_player: method %s on %q", r.Method, r.URL.Path))
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Etag", f.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	return nil
}

// playerPath maps a request path to the name of an embedded file; ours is
// false for paths the player does not own.
func playerPath(p string) (name string, ours bool) {
	switch p {
	case "", "/", "/index.html":
		return "index.html", true
	}
	if rest, ok := strings.CutPrefix(p, "/sdr/"); ok {
		return path.Clean("/" + rest)[1:], true
	}
	return "", false
}

// playerFiles loads the embedded files once per provisioning; the page gets
// the stream URL as a meta tag that app.js reads.
func playerFiles(streamURL string) (map[string]playerFile, error) {
	entries, err := fs.ReadDir(web.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("sdr_player: reading embedded files: %w", err)
	}
	files := make(map[string]playerFile, len(entries))
	for _, e := range entries {
		body, err := fs.ReadFile(web.FS, e.Name())
		if err != nil {
			return nil, fmt.Errorf("sdr_player: reading embedded %s: %w", e.Name(), err)
		}
		if e.Name() == "index.html" && streamURL != "" {
			meta := fmt.Sprintf("<meta name=\"sdr-stream-url\" content=\"%s\">\n", html.EscapeString(streamURL))
			body = bytes.Replace(body, []byte("<title>"), []byte(meta+"<title>"), 1)
		}
		sum := sha256.Sum256(body)
		files[e.Name()] = playerFile{
			body:  body,
			ctype: playerContentType(e.Name()),
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
	}
	return files, nil
}

func playerContentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	}
	return "application/octet-stream"
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Player)(nil)
	_ caddy.Validator             = (*Player)(nil)
	_ caddyhttp.MiddlewareHandler = (*Player)(nil)
)
