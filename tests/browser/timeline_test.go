package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// recordingTimeline is the JSON of the stream's ?recording.
type recordingTimeline struct {
	Start, End *time.Time
	Recorder   string
	Markers    []struct {
		Time time.Time
		Kind string
		Mode string
	}
}

func (r recordingTimeline) hasGate(mode string) bool {
	for _, m := range r.Markers {
		if m.Kind == "gate" && m.Mode == mode {
			return true
		}
	}
	return false
}

func getTimeline(t *testing.T, url string) (recordingTimeline, int) {
	t.Helper()
	var tl recordingTimeline
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return tl, resp.StatusCode
	}
	if err := json.NewDecoder(resp.Body).Decode(&tl); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return tl, resp.StatusCode
}

// TestPlayerTimeline records the test pattern with sdr_recorder (embedded
// JetStream), causes a safety gate transition by stopping the writer, and
// uses the player's timeline: it shows the recording with the HOLD marker,
// a click on the bar replays from that moment (frames decoded, their age
// the recording's, commands off and "REPLAY" shown), and Live returns to
// the live stream.
func TestPlayerTimeline(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	src := startSource(t, ring, "--codec", "h264", "--gop", "30")
	e := &edge{HTTPPort: testenv.FreePort(t), NATSPort: testenv.FreePort(t), Ring: ring}
	cf := edgeCaddyfile(e.HTTPPort, e.NATSPort, "shm "+ring)
	cf = strings.Replace(cf, "\t\t\tlisten 127.0.0.1:", "\t\t\tjetstream on\n\t\t\tlisten 127.0.0.1:", 1)
	cf = strings.Replace(cf, "\tsdr_nats {", "\tsdr_recorder {\n\t\tstorage memory\n\t\tidr_interval 1s\n\t}\n\tsdr_nats {", 1)
	e.caddyfile = cf
	e.start(t)
	recURL := fmt.Sprintf("http://127.0.0.1:%d/stream/ws?recording", e.HTTPPort)

	// Some seconds recorded, then the writer stops: the gate goes to HOLD
	// (recorded), and comes back ARMED when a new writer starts.
	testwait.For(t, "3 s of video recorded", func() bool {
		tl, code := getTimeline(t, recURL)
		return code == http.StatusOK && tl.Start != nil && tl.End.Sub(*tl.Start) >= 3*time.Second
	})
	src.stop(t)
	testwait.For(t, "the gate's HOLD in the recording's markers", func() bool {
		tl, _ := getTimeline(t, recURL)
		return tl.hasGate("HOLD")
	})
	restarted := time.Now()
	startSource(t, ring, "--codec", "h264", "--gop", "30")
	testwait.For(t, "2 s more recorded after the writer restarted, and the gate ARMED again", func() bool {
		tl, _ := getTimeline(t, recURL)
		return tl.End != nil && tl.End.Sub(restarted) >= 2*time.Second && tl.hasGate("ARMED")
	})
	tl, _ := getTimeline(t, recURL)
	t.Logf("recording %v .. %v, markers %+v", tl.Start, tl.End, tl.Markers)

	d := startBrowser(t)
	openPlayer(t, d, "main", e.URL())
	testwait.For(t, "the timeline shown with the gate's HOLD and ARMED markers", func() bool {
		return evalJS[bool](t, d, "main", `!document.getElementById('timeline').hidden && document.querySelectorAll('.sdr-tl-marker.gate[data-mode=HOLD]').length > 0 && document.querySelectorAll('.sdr-tl-marker.gate[data-mode=ARMED]').length > 0`)
	})
	if got := evalJS[string](t, d, "main", `document.querySelector('.sdr-tl-mode').textContent`); got != "LIVE" {
		t.Errorf("timeline mode %q before any replay, want LIVE", got)
	}

	// Click on the bar one second after the recording's start.
	target := tl.Start.Add(time.Second)
	clicked := time.Now()
	url := evalJS[string](t, d, "main", fmt.Sprintf(`(() => {
		const tl = window.sdrTimeline, r = tl.bar.getBoundingClientRect();
		const f = (%d - tl.extent.start.getTime()) / (tl.extent.end - tl.extent.start);
		tl.bar.dispatchEvent(new MouseEvent('click', { bubbles: true, clientX: r.left + f * r.width }));
		return window.sdrPlayer.connectURL();
	})()`, target.UnixMilli()))
	if !strings.Contains(url, "replay=") || !strings.Contains(url, "speed=1") {
		t.Fatalf("after the click the player connects to %q, want ?replay=&speed=1", url)
	}
	before, err := d.Stats("main")
	if err != nil {
		t.Fatal(err)
	}
	st := waitFrames(t, d, "main", before.FramesDecoded+30, 15*time.Second)
	// A recorded frame's age is at least how long ago it was recorded: the
	// replay started at target, after the click.
	offset := clicked.Sub(target)
	t.Logf("replayed from %v, %v before the click: frame age %.0f ms", target, offset, st.AgeMs)
	if st.AgeMs < float64(offset.Milliseconds())-500 {
		t.Errorf("replayed frame age %.0f ms, want at least %v (it was recorded before the click)", st.AgeMs, offset)
	}
	if st.DecodeErrors != 0 {
		t.Errorf("%d decode errors in replay (last: %q)", st.DecodeErrors, st.LastError)
	}
	if got := evalJS[string](t, d, "main", `document.querySelector('.sdr-mode').textContent`); !strings.HasPrefix(got, "REPLAY") {
		t.Errorf("video badge %q in replay, want REPLAY", got)
	}
	if !evalJS[bool](t, d, "main", `document.getElementById('estop').disabled && !document.getElementById('replay-note').hidden && window.sdrPlayer.command('estop') === 0`) {
		t.Errorf("in replay the command buttons are on, or a command was sent")
	}
	screenshot(t, d, "main", "player-timeline-replay.png")

	// Pause closes the replay and keeps the position; resume goes on.
	evalJS[any](t, d, "main", `document.querySelector('.sdr-tl-pause').click()`)
	testwait.For(t, "the replay paused", func() bool {
		return evalJS[bool](t, d, "main", `window.sdrPlayer.state === 'paused' && window.sdrPlayer.ws === null`)
	})
	evalJS[any](t, d, "main", `document.querySelector('.sdr-tl-pause').click()`)
	before, err = d.Stats("main")
	if err != nil {
		t.Fatal(err)
	}
	waitFrames(t, d, "main", before.FramesDecoded+10, 15*time.Second)

	// At the end of the recording the replay stops there and says so; it
	// does not start again.
	evalJS[any](t, d, "main", `window.sdrPlayer.replayAt(new Date(Date.now() - 1000), 4)`)
	testwait.For(t, "the replay to reach the end of the recording", func() bool {
		return evalJS[bool](t, d, "main", `window.sdrPlayer.state === 'ended' && window.sdrPlayer.ws === null`)
	})
	if got := evalJS[string](t, d, "main", `document.querySelector('.sdr-banner').textContent`); got != "END OF RECORDING" {
		t.Errorf("banner %q at the end of the replay, want END OF RECORDING", got)
	}
	if got := evalJS[string](t, d, "main", `document.querySelector('.sdr-tl-pause').textContent`); got != "Resume" {
		t.Errorf("pause button %q at the end of the replay, want Resume", got)
	}

	// Live returns to the live stream.
	evalJS[any](t, d, "main", `document.querySelector('.sdr-tl-live').click()`)
	if url := evalJS[string](t, d, "main", `window.sdrPlayer.connectURL()`); strings.Contains(url, "replay=") {
		t.Errorf("after Live the player connects to %q", url)
	}
	testwait.For(t, "live frames again (their age below the replay's)", func() bool {
		st, err := d.Stats("main")
		return err == nil && st.State == "live" && st.AgeMs < float64(offset.Milliseconds())-1000
	})
	if !evalJS[bool](t, d, "main", `!document.getElementById('estop').disabled && document.querySelector('.sdr-mode').hidden && document.querySelector('.sdr-tl-mode').textContent === 'LIVE'`) {
		t.Errorf("after Live the commands are still off or REPLAY still shown")
	}
}

// TestPlayerKeep records the test pattern and keeps a window named in the
// fields beside the timeline's Keep button (a bad name is not sent); then
// it presses Keep with the fields empty: the recorder acks it with the kept stream, the
// timeline marks the kept window (copying, then done), a click on it
// replays the kept stream (&kept=), and while replaying the Keep button
// is off.
func TestPlayerKeep(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	startSource(t, ring, "--codec", "h264", "--gop", "30")
	e := &edge{HTTPPort: testenv.FreePort(t), NATSPort: testenv.FreePort(t), Ring: ring}
	cf := edgeCaddyfile(e.HTTPPort, e.NATSPort, "shm "+ring)
	cf = strings.Replace(cf, "\t\t\tlisten 127.0.0.1:", "\t\t\tjetstream on\n\t\t\tlisten 127.0.0.1:", 1)
	cf = strings.Replace(cf, "\tsdr_nats {", "\tsdr_recorder {\n\t\tstorage memory\n\t\tidr_interval 1s\n\t}\n\tsdr_nats {", 1)
	e.caddyfile = cf
	e.start(t)
	recURL := fmt.Sprintf("http://127.0.0.1:%d/stream/ws?recording", e.HTTPPort)
	testwait.For(t, "2 s of video recorded", func() bool {
		tl, code := getTimeline(t, recURL)
		return code == http.StatusOK && tl.Start != nil && tl.End.Sub(*tl.Start) >= 2*time.Second
	})

	d := startBrowser(t)
	openPlayer(t, d, "main", e.URL())
	testwait.For(t, "the timeline's Keep button on, live", func() bool {
		return evalJS[bool](t, d, "main", `!document.getElementById('timeline').hidden && !document.querySelector('.sdr-tl-keep').disabled`)
	})
	evalJS[any](t, d, "main", `(() => {
		window.keepAcks = [];
		window.sdrPlayer.addEventListener('ack', (e) => { if (e.detail.action === 'keep') window.keepAcks.push(e.detail); });
	})()`)

	// The fields beside Keep set its name and window: a name the recorder
	// would refuse is pointed out and nothing is sent; a good one with 5 s
	// before and 1 s after is kept under that name.
	notSent := evalJS[bool](t, d, "main", `(() => {
		document.querySelector('.sdr-tl-keep-name').value = 'not a name!';
		document.querySelector('.sdr-tl-keep').click();
		return window.keepAcks.length === 0 && window.sdrPlayer.cmdSeq === 0 &&
			!document.querySelector('.sdr-tl-keep-name').checkValidity();
	})()`)
	evalJS[any](t, d, "main", `(() => {
		document.querySelector('.sdr-tl-keep-name').value = 'drill-1';
		document.querySelector('.sdr-tl-keep-before').value = '5';
		document.querySelector('.sdr-tl-keep-after').value = '1';
		document.querySelector('.sdr-tl-keep').click();
	})()`)
	testwait.For(t, "the named keep's ack", func() bool { return evalJS[int](t, d, "main", `window.keepAcks.length`) > 0 })
	if n := evalJS[int](t, d, "main", `window.keepAcks.length`); !notSent || n != 1 {
		t.Errorf("after a keep with the name 'not a name!' and one with 'drill-1': %d acks, want 1 (the first not sent)", n)
	}
	ack := evalJS[map[string]any](t, d, "main", `window.keepAcks[0]`)
	detail, _ := ack["detail"].(string)
	var from, to, as string
	if _, err := fmt.Sscanf(detail, "keeping %s to %s as %s", &from, &to, &as); err != nil || ack["status"] != "ok" ||
		ack["kept"] != "SDR_REC_KEEP_drill-1" || as != "SDR_REC_KEEP_drill-1" {
		t.Fatalf("named keep's ack %v, want ok, kept as SDR_REC_KEEP_drill-1", ack)
	}
	f, err1 := time.Parse(time.RFC3339, from)
	tt, err2 := time.Parse(time.RFC3339, to)
	if err1 != nil || err2 != nil || tt.Sub(f) < 5*time.Second || tt.Sub(f) > 7*time.Second {
		t.Errorf("named keep's window %s to %s, want 6 s (5 before, 1 after; whole seconds)", from, to)
	}
	// One keep copies at a time: the next waits until this one is done.
	testwait.For(t, "the named keep's copy done", func() bool {
		return evalJS[bool](t, d, "main", `(() => { const k = document.querySelector('.sdr-tl-kept[data-stream="SDR_REC_KEEP_drill-1"]'); return !!k && k.dataset.copying === 'false'; })()`)
	})

	// Emptied fields take the recorder's defaults: its own name, the
	// last 2 minutes and the next 30 s.
	evalJS[any](t, d, "main", `(() => {
		for (const c of ['name', 'before', 'after']) document.querySelector('.sdr-tl-keep-' + c).value = '';
		document.querySelector('.sdr-tl-keep').click();
	})()`)
	testwait.For(t, "the keep's ack", func() bool { return evalJS[int](t, d, "main", `window.keepAcks.length`) > 1 })
	ack = evalJS[map[string]any](t, d, "main", `window.keepAcks[1]`)
	kept, _ := ack["kept"].(string)
	if ack["status"] != "ok" || !strings.HasPrefix(kept, "SDR_REC_KEEP_keep-") {
		t.Fatalf("keep's ack %v, want ok with the kept stream", ack)
	}
	testwait.For(t, "the kept window marked on the timeline", func() bool {
		return evalJS[bool](t, d, "main", fmt.Sprintf(`(() => { const k = document.querySelector('.sdr-tl-kept[data-stream=%q]'); return !!k && k.dataset.copying === 'true' && k.getBoundingClientRect().width > 0; })()`, kept))
	})
	screenshot(t, d, "main", "player-keep.png")

	// A click on the kept window replays the kept stream; Keep is off.
	url := evalJS[string](t, d, "main", fmt.Sprintf(`(() => { document.querySelector('.sdr-tl-kept[data-stream=%q]').click(); return window.sdrPlayer.connectURL(); })()`, kept))
	if !strings.Contains(url, "kept=keep-") || !strings.Contains(url, "replay=") {
		t.Fatalf("after a click on the kept window the player connects to %q, want ?replay=..&kept=", url)
	}
	before, err := d.Stats("main")
	if err != nil {
		t.Fatal(err)
	}
	waitFrames(t, d, "main", before.FramesDecoded+20, 15*time.Second)
	if !evalJS[bool](t, d, "main", `document.querySelector('.sdr-tl-keep').disabled && document.querySelector('.sdr-tl-keep-name').disabled`) {
		t.Error("the Keep button or its fields are on while replaying")
	}

	// The admin API pauses the recorder: ?recording and the timeline say
	// so, until it resumes.
	recorderState := func(want string) bool {
		tl, code := getTimeline(t, recURL)
		return code == http.StatusOK && tl.Recorder == want
	}
	if !recorderState("recording") {
		t.Error(`?recording does not say "recorder": "recording"`)
	}
	adminPost(t, e.Caddy.AdminAddr, "/sdr/recorder/pause")
	testwait.For(t, `?recording saying the recorder is paused`, func() bool { return recorderState("paused") })
	testwait.For(t, "the timeline showing the recorder paused", func() bool {
		return evalJS[bool](t, d, "main", `(() => { const r = document.querySelector('.sdr-tl-recorder'); return !r.hidden && r.textContent === 'NOT RECORDING · paused' && r.getBoundingClientRect().width > 0; })()`)
	})
	adminPost(t, e.Caddy.AdminAddr, "/sdr/recorder/resume")
	testwait.For(t, "the paused note gone once the recorder resumed", func() bool {
		return evalJS[bool](t, d, "main", `document.querySelector('.sdr-tl-recorder').hidden && document.getElementById('timeline').dataset.recorder === 'recording'`)
	})
}

// adminPost posts to the caddy admin API's path and fails the test unless
// it answers 200.
func adminPost(t *testing.T, admin, path string) {
	t.Helper()
	resp, err := http.Post("http://"+admin+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", path, resp.Status)
	}
}
