package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// MCAPCheck reads the MCAP file at path with both readers of the reference
// implementation, @mcap/core (tests/node/mcap/check.mjs), and returns the
// JSON line the script prints. A missing node or @mcap/core fails the test
// with what to install.
func MCAPCheck(t testing.TB, path string) []byte {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (scripts/deps.sh installs it): %v", err)
	}
	dir := filepath.Join(Root(), "tests", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@mcap", "core", "package.json")); err != nil {
		t.Fatalf("@mcap/core is not installed in tests/node (scripts/deps.sh runs npm ci there): %v", err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), testwait.Deadline(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "mcap/check.mjs", path)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("check.mjs %s: %v\n%s", path, err, stderr.String())
	}
	return out
}

// FFprobe runs ffprobe -v error with args and returns what it printed; an
// error, or anything on its stderr, fails the test. A missing ffprobe
// fails it with the package to install.
func FFprobe(t testing.TB, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatal("ffprobe not found: install Debian's ffmpeg package (apt-get install ffmpeg; scripts/deps.sh does)")
	}
	ctx, cancel := context.WithDeadline(context.Background(), testwait.Deadline(time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-v", "error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("ffprobe %q: %v: %s", args, err, stderr.String())
	}
	return out
}

// Video is what ffprobe says of a file's first video stream, every frame
// decoded to count them (-count_frames).
type Video struct {
	Codec      string
	W, H       int
	ReadFrames int // decoded
	NbFrames   int // samples in the index
	Duration   float64
	PTS        []float64 // packets' presentation times, in file order
	Keys       []int     // indexes of the packets flagged as keyframes
}

// ProbeVideo runs ffprobe on the file at path and returns its first video
// stream; a file without one fails the test.
func ProbeVideo(t testing.TB, path string) Video {
	t.Helper()
	out := FFprobe(t, "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,nb_frames,codec_name,width,height,duration:packet=pts_time,flags",
		"-of", "json", path)
	var doc struct {
		Packets []struct {
			PTS   string `json:"pts_time"`
			Flags string `json:"flags"`
		} `json:"packets"`
		Streams []struct {
			Codec      string `json:"codec_name"`
			Width      int    `json:"width"`
			Height     int    `json:"height"`
			Duration   string `json:"duration"`
			NbFrames   string `json:"nb_frames"`
			ReadFrames string `json:"nb_read_frames"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || len(doc.Streams) != 1 {
		t.Fatalf("ffprobe of %s printed %s (%v), want one video stream", path, out, err)
	}
	s := doc.Streams[0]
	v := Video{Codec: s.Codec, W: s.Width, H: s.Height}
	num := func(what, text string) float64 {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			t.Fatalf("ffprobe of %s: %s %q: %v", path, what, text, err)
		}
		return f
	}
	v.ReadFrames = int(num("nb_read_frames", s.ReadFrames))
	v.NbFrames = int(num("nb_frames", s.NbFrames))
	v.Duration = num("duration", s.Duration)
	for i, pk := range doc.Packets {
		v.PTS = append(v.PTS, num("pts_time", pk.PTS))
		if strings.HasPrefix(pk.Flags, "K") {
			v.Keys = append(v.Keys, i)
		}
	}
	return v
}
