package replay

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseQuery(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		query string
		live  bool
		from  time.Time
		speed float64
		err   string
	}{
		{query: "", live: true},
		{query: "speed=9", live: true}, // no replay: a live request, speed unread
		{query: "replay=2026-12-04T02:30:00Z", from: now.Add(-30 * time.Minute), speed: 1},
		{query: "replay=2026-12-04T02:30:00.25Z&speed=0.25", from: now.Add(-30*time.Minute + 250*time.Millisecond), speed: 0.25},
		{query: "replay=2026-12-04T04:30:00%2B02:00&speed=4", from: now.Add(-30 * time.Minute), speed: 4},
		{query: "replay=2026-12-04T04:30:00+02:00&speed=2", from: now.Add(-30 * time.Minute), speed: 2},
		{query: "replay=-30s", from: now.Add(-30 * time.Second), speed: 1},
		{query: "replay=-1m30s&speed=1.5", from: now.Add(-90 * time.Second), speed: 1.5},
		{query: "replay=", err: `replay "": empty`},
		{query: "replay", err: `replay "": empty`},
		{query: "replay=yesterday", err: `replay "yesterday": not a time; want an RFC 3339 time`},
		{query: "replay=30s", err: `replay "30s": not a time`},
		{query: "replay=-0s", err: `replay "-0s": not before now`},
		{query: "replay=-x", err: `replay "-x": not a duration`},
		{query: "replay=2026-12-04T03:00:01Z", err: "in the future"},
		{query: "replay=-30s&speed=", err: `speed "": want a number from 0.25 to 4`},
		{query: "replay=-30s&speed=0.2", err: `speed "0.2": want a number from 0.25 to 4`},
		{query: "replay=-30s&speed=4.01", err: `speed "4.01"`},
		{query: "replay=-30s&speed=NaN", err: `speed "NaN"`},
		{query: "replay=-30s&speed=-1", err: `speed "-1"`},
		{query: "replay=-30s&speed=2x", err: `speed "2x"`},
	} {
		q, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		p, ok, err := ParseQuery(q, now)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one containing %q", c.query, err, c.err)
			}
		case err != nil:
			t.Errorf("%q: %v", c.query, err)
		case ok == c.live:
			t.Errorf("%q: replay %v, want %v", c.query, ok, !c.live)
		case !c.live && (!p.From.Equal(c.from) || p.Speed != c.speed):
			t.Errorf("%q: from %v speed %g, want %v and %g", c.query, p.From, p.Speed, c.from, c.speed)
		}
	}
}
