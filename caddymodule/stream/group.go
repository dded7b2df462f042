package stream

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/internal/hub"
)

// streamGroups holds, per stream name and source, the counts shared by
// every sdr_stream handler that serves that stream: Caddyfile.example
// imports one stream into two sites (the edge's /stream/ws and the
// transport-compatible :8080), a handler and a hub each, where the old
// service had one fan-out. Kept across config reloads like the ring reader.
var streamGroups = caddy.NewUsagePool()

// streamGroup is a pooled hub.Tally subscribed to the stream's source.
type streamGroup struct {
	*hub.Tally
	unsub func()
}

// Destruct stops counting, when the last handler of the stream is gone.
func (g streamGroup) Destruct() error {
	g.unsub()
	return nil
}

// joinGroup takes the stream's group (making it, subscribed to the source,
// for the first handler) and adds this handler's hub to it.
func (s *Stream) joinGroup() error {
	key := s.name + "|" + sourceIdentity(s.source.src)
	v, _, err := streamGroups.LoadOrNew(key, func() (caddy.Destructor, error) {
		t := hub.NewTally(s.metrics.framesIn.WithLabelValues(s.name))
		return streamGroup{Tally: t, unsub: s.source.src.Subscribe(t.Frame)}, nil
	})
	if err != nil {
		return fmt.Errorf("sdr_stream %s: counting the stream: %w", s.name, err)
	}
	g := v.(streamGroup)
	s.group, s.groupKey = g.Tally, key
	s.groupOf = g.Add(s.hub)
	return nil
}

// leaveGroup undoes joinGroup, if it was done.
func (s *Stream) leaveGroup() error {
	if s.groupKey == "" {
		return nil
	}
	s.groupOf()
	key := s.groupKey
	s.groupKey = ""
	if _, err := streamGroups.Delete(key); err != nil {
		return fmt.Errorf("sdr_stream %s: releasing the stream's counts: %w", s.name, err)
	}
	return nil
}
