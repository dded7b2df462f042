package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// start runs a shell script under Start and kills what is left of it when
// the test ends.
func start(t *testing.T, script string) *Process {
	t.Helper()
	p, err := Start("sh", exec.Command("sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestStartKeepsOutputAndExitStatus(t *testing.T) {
	t.Parallel()
	p := start(t, "echo to-stdout; echo to-stderr >&2; exit 3")
	testwait.Closed(t, p.Exited(), "the script to exit")
	if out := p.Output(); !strings.Contains(out, "to-stdout\n") || !strings.Contains(out, "to-stderr\n") {
		t.Errorf("Output %q, want both streams", out)
	}
	if out := p.Stdout(); out != "to-stdout\n" {
		t.Errorf("Stdout %q, want the standard output only", out)
	}
	var ee *exec.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("ExitErr %v, want exit status 3", err)
	}
}

func TestStartAlsoWritesWhereCmdPoints(t *testing.T) {
	t.Parallel()
	var own Output
	cmd := exec.Command("sh", "-c", "echo hello")
	cmd.Stdout = &own
	p, err := Start("sh", cmd)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Closed(t, p.Exited(), "the script to exit")
	if own.String() != "hello\n" || p.Output() != "hello\n" {
		t.Errorf("cmd.Stdout got %q, Output %q; want hello in both", own.String(), p.Output())
	}
}

func TestStartFailsForAMissingProgram(t *testing.T) {
	t.Parallel()
	_, err := Start("nothing", exec.Command("/nonexistent/program"))
	if err == nil || !strings.Contains(err.Error(), "starting nothing") {
		t.Fatalf("Start of a missing program: %v", err)
	}
}

func TestLimitFiles(t *testing.T) {
	t.Parallel()
	// The program and its arguments pass through the shell unchanged,
	// spaces and quotes included.
	cmd := exec.Command("sh", "-c", `ulimit -Sn; ulimit -Hn; echo "$0"`, `a 'b' "c"`)
	LimitFiles(cmd, 200)
	p, err := Start("sh", cmd)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Closed(t, p.Exited(), "the script to exit")
	if err := p.ExitErr(); err != nil {
		t.Fatalf("%v: %s", err, p.Output())
	}
	if out := p.Stdout(); out != "200\n200\na 'b' \"c\"\n" {
		t.Errorf("soft limit, hard limit, argument: %q, want 200, 200 and the argument as given", out)
	}
}

func TestWaitReadyOnceTheCheckHolds(t *testing.T) {
	t.Parallel()
	p := start(t, "exec sleep 60")
	looks := 0
	err := p.WaitReady(testwait.Timeout(testwait.Default), func(context.Context) error {
		looks++
		if looks < 3 {
			return fmt.Errorf("look %d", looks)
		}
		return nil
	})
	if err != nil || looks != 3 {
		t.Fatalf("WaitReady: %v after %d looks, want nil after 3", err, looks)
	}
}

func TestWaitReadySeesTheProcessExit(t *testing.T) {
	t.Parallel()
	p := start(t, "exit 7")
	err := p.WaitReady(testwait.Timeout(testwait.Default), func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("WaitReady of a process that exits: %v", err)
	}
}

func TestWaitReadyGivesUpAfterTimeout(t *testing.T) {
	t.Parallel()
	p := start(t, "exec sleep 60")
	errLast := errors.New("the last look")
	err := p.WaitReady(20*time.Millisecond, func(context.Context) error { return errLast })
	if !errors.Is(err, errLast) || !strings.Contains(err.Error(), "not ready after 20ms") {
		t.Fatalf("WaitReady past its timeout: %v", err)
	}
}

func TestStopEndsAProcessThatExitsOnSIGTERM(t *testing.T) {
	t.Parallel()
	p := start(t, "exec sleep 60")
	if err := p.Stop(testwait.Timeout(testwait.Default)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	var ee *exec.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("ExitErr %v, want death by SIGTERM", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop of a process that has exited: %v", err)
	}
}

// A process that ignores SIGTERM is killed after the grace, and so is its
// child in the same process group.
func TestStopKillsTheGroupAfterGrace(t *testing.T) {
	t.Parallel()
	p := start(t, `trap "" TERM; sleep 60 & echo "child $!"; wait`)
	var child int
	testwait.For(t, "the script to print its child's pid", func() bool {
		_, err := fmt.Sscanf(p.Output(), "child %d", &child)
		return err == nil
	})
	err := p.Stop(100 * time.Millisecond)
	if !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop of a process that ignores SIGTERM: %v, want ErrKilled", err)
	}
	testwait.For(t, "the child in the process group to be gone", func() bool { return gone(child) })
}

// gone reports whether pid has exited (a zombie counts).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestListeningAndAnswers(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	ctx := context.Background()
	if err := Listening(addr)(ctx); err != nil {
		t.Errorf("Listening(%s) with a listener: %v", addr, err)
	}
	// A listener that never answers: the check ends with the wait's context.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := Answers("http://" + addr + "/")(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Answers on a TCP listener that speaks no HTTP: %v, want the context's deadline", err)
	}
	l.Close()
	// A port that nobody listens on: bound without listening, so that no
	// other test can take it between here and the dial (a closed
	// listener's port can be, on a busy machine).
	refused := boundNotListening(t)
	if err := Listening(refused)(ctx); err == nil {
		t.Errorf("Listening(%s) with no listener: nil", refused)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	if err := Answers(srv.URL)(ctx); err != nil {
		t.Errorf("Answers with a 503: %v, want any status to do", err)
	}
	if err := AnswersWith(srv.URL, http.StatusOK)(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("AnswersWith 200 given a 503: %v", err)
	}
}

// boundNotListening returns a loopback address whose port is bound by a
// socket that does not listen, until the test ends: a dial is refused.
func boundNotListening(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// The kernel may pick the same port twice in a row: the fallback does not
// hand it out again.
func TestFallbackPortNeverTwice(t *testing.T) {
	t.Parallel()
	picks := []int{5000, 5000, 5001, 5000, 5002}
	pick := func() (int, error) {
		p := picks[0]
		picks = picks[1:]
		return p, nil
	}
	var s portSet
	for _, want := range []int{5000, 5001, 5002} {
		if p, err := s.next(pick); p != want || err != nil {
			t.Fatalf("next = %d, %v; want %d", p, err, want)
		}
	}
}

func TestReservedRange(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ephLo, ephHi, lo, hi int
		ok                   bool
	}{
		{32768, 60999, lowestPort, 32767, true}, // Linux's default
		{49152, 65535, lowestPort, 49151, true}, // IANA's
		{1024, 60999, 61000, 65535, true},       // no room below
		{1024, 65535, 0, 0, false},              // no room anywhere
	} {
		lo, hi, ok := reservedRange(c.ephLo, c.ephHi)
		if lo != c.lo || hi != c.hi || ok != c.ok {
			t.Errorf("reservedRange(%d, %d) = %d, %d, %v; want %d, %d, %v", c.ephLo, c.ephHi, lo, hi, ok, c.lo, c.hi, c.ok)
		}
	}
}

func TestFreePortIsOutsideTheEphemeralRange(t *testing.T) {
	t.Parallel()
	ephLo, ephHi, err := ephemeralRange()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := reservedRange(ephLo, ephHi); !ok {
		t.Skipf("this machine's ephemeral range %d-%d leaves no room for port blocks", ephLo, ephHi)
	}
	seen := map[int]bool{}
	for range 2 * portBlock { // across a block's end
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if ephLo <= p && p <= ephHi {
			t.Fatalf("FreePort = %d, inside the ephemeral range %d-%d", p, ephLo, ephHi)
		}
		if seen[p] {
			t.Fatalf("FreePort gave %d twice", p)
		}
		seen[p] = true
	}
}

// testAllocator is an allocator on dir over the two blocks from lo, as a
// process of its own would be.
func testAllocator(t *testing.T, dir string, lo int) *portAllocator {
	a := &portAllocator{dir: dir, lo: lo, hi: lo + 2*portBlock - 1}
	t.Cleanup(a.release)
	return a
}

// Two processes never hold the same block: a third finds none free until
// one gives its block back.
func TestPortBlocksAreExclusive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const lo = 32768 - 4*portBlock // in the reserved range of Linux's default
	a, b, c := testAllocator(t, dir, lo), testAllocator(t, dir, lo), testAllocator(t, dir, lo)
	block := func(name string, x *portAllocator) int {
		t.Helper()
		p, err := x.take()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return (p - lo) / portBlock
	}
	ba, bb := block("a", a), block("b", b)
	if ba == bb {
		t.Fatalf("a and b both hold block %d", ba)
	}
	if p, err := c.take(); err == nil || !strings.Contains(err.Error(), "held by other processes") {
		t.Fatalf("c took %d, %v while a and b held both blocks", p, err)
	}
	a.release()
	if bc := block("c", c); bc != ba {
		t.Fatalf("c holds block %d, want a's %d", bc, ba)
	}
}

// A port that something listens on is not handed out.
func TestFreePortSkipsAListeningPort(t *testing.T) {
	t.Parallel()
	const lo = 32768 - 2*portBlock
	a := &portAllocator{dir: t.TempDir(), lo: lo, hi: lo + portBlock - 1}
	t.Cleanup(a.release)
	var busy net.Listener
	for p := lo; busy == nil && p < lo+portBlock-1; p++ {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			busy = l
		}
	}
	if busy == nil {
		t.Fatalf("no port of %d-%d to listen on", lo, lo+portBlock-1)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port
	for p := lo; p <= taken; p++ {
		got, err := a.take()
		if err != nil {
			t.Fatal(err)
		}
		if got == taken {
			t.Fatalf("take gave %d, which a listener holds", got)
		}
		if got > taken {
			return
		}
	}
}

func TestCPUSeconds(t *testing.T) {
	t.Parallel()
	c0, err := CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the kernel's count (in 1/100 s) moves.
	testwait.For(t, "this process's CPU time to grow", func() bool {
		for x, end := 0, time.Now().Add(20*time.Millisecond); time.Now().Before(end); x++ {
			_ = strconv.Itoa(x)
		}
		c, err := CPUSeconds(os.Getpid())
		return err == nil && c > c0
	})
	p := start(t, "exit 0")
	testwait.Closed(t, p.Exited(), "the script to exit")
	if _, err := CPUSeconds(p.Pid()); err == nil {
		t.Errorf("CPUSeconds of a reaped process: nil error")
	}
	if total := TotalCPUSeconds(os.Getpid(), p.Pid()); total <= c0 {
		t.Errorf("TotalCPUSeconds %g, want this process's time at least (%g), the gone one counting 0", total, c0)
	}
}

// TestRSSKiB reads the resident memory of a child, this test binary run
// again, that has touched 64 MiB page by page and holds it: a child of
// its own, since this process's own RSS moves with the garbage collector
// and the parallel tests (under -race it went down as often as up).
func TestRSSKiB(t *testing.T) {
	if os.Getenv("HARNESS_RSS_CHILD") != "" {
		b := make([]byte, 64<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("touched")
		_, _ = io.Copy(io.Discard, os.Stdin) // hold b until the parent closes stdin
		b[len(b)-1] = b[0]
		return
	}
	t.Parallel()
	if r, err := RSSKiB(os.Getpid()); err != nil || r <= 0 {
		t.Fatalf("RSSKiB of this process = %d, %v", r, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRSSKiB$")
	cmd.Env = append(os.Environ(), "HARNESS_RSS_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	child, err := Start("child", cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(child.Kill)
	testwait.For(t, "the child to touch 64 MiB", func() bool { return strings.Contains(child.Stdout(), "touched\n") })
	if r, err := RSSKiB(child.Pid()); err != nil || r < 64<<10 {
		t.Errorf("RSSKiB of a child holding 64 MiB it touched = %d KiB, %v; want at least %d", r, err, 64<<10)
	}
	stdin.Close()
	testwait.Closed(t, child.Exited(), "the child to exit")
	if _, err := RSSKiB(child.Pid()); err == nil {
		t.Errorf("RSSKiB of a reaped process: nil error")
	}
}

func TestMetricsAndCounters(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `# HELP caddy_sdr_stream_frames_total Frames.
# TYPE caddy_sdr_stream_frames_total counter
caddy_sdr_stream_frames_total{stream="front"} 10
caddy_sdr_stream_frames_total{stream="wrist"} 5
caddy_sdr_stream_clients{stream="front",label="a b"} 2
go_goroutines 42
`)
	}))
	defer srv.Close()
	m, err := Metrics(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		`caddy_sdr_stream_frames_total{stream="front"}`:        "10",
		`caddy_sdr_stream_frames_total{stream="wrist"}`:        "5",
		`caddy_sdr_stream_clients{stream="front",label="a b"}`: "2",
		`go_goroutines`: "42",
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("Metrics = %v, want %v", m, want)
	}
	c, err := Counters(srv.Client(), srv.URL, "caddy_sdr_stream_")
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 2 || c["frames_total"] != 15 || c["clients"] != 2 {
		t.Errorf("Counters = %v, want frames_total 15 (summed over labels) and clients 2", c)
	}

	srv.Config.Handler = http.NotFoundHandler()
	if _, err := Metrics(srv.Client(), srv.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Metrics of a 404: %v", err)
	}
}

func TestOutputStopsAtItsLimit(t *testing.T) {
	t.Parallel()
	var o Output
	chunk := strings.Repeat("x", 1<<20)
	for range 17 {
		if n, err := o.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	s := o.String()
	if !strings.HasSuffix(s, "[output past 16 MiB not kept]\n") || len(s) > outputLimit+100 {
		t.Errorf("Output of 17 MiB: %d bytes, ends %q", len(s), s[max(0, len(s)-40):])
	}
}

func TestRootAndTool(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(Root() + "/go.mod"); err != nil {
		t.Errorf("Root %s holds no go.mod: %v", Root(), err)
	}
	if _, err := Tool("no-such-tool"); err == nil || !strings.Contains(err.Error(), "scripts/deps.sh") {
		t.Errorf("Tool of a missing tool: %v", err)
	}
}
