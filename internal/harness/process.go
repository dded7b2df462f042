package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started process in a process group of its own, with what it
// prints kept for reading while it runs.
type Process struct {
	// Name says which process this is in errors.
	Name string
	// Cmd is the started command.
	Cmd *exec.Cmd

	out, stdout Output
	exited      chan struct{}
	waitErr     error // set before exited closes
}

// Start starts cmd, named name in errors, in a process group of its own,
// so that Stop and Kill reach the children it starts too. What it prints
// is kept (Output, Stdout) and also goes where cmd.Stdout and cmd.Stderr
// already point. A goroutine waits for it: use Exited and ExitErr, never
// cmd.Wait.
func Start(name string, cmd *exec.Cmd) (*Process, error) {
	p := &Process{Name: name, Cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout = tee(cmd.Stdout, &p.out, &p.stdout)
	cmd.Stderr = tee(cmd.Stderr, &p.out)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if cmd.WaitDelay == 0 {
		// A child that outlives the process keeps its output pipe open:
		// do not wait for it longer than this after the process exited.
		cmd.WaitDelay = waitDelay
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitDelay is how long Exited waits, after the process has exited, for
// the children it left to close its output.
const waitDelay = 2 * time.Second

func tee(to io.Writer, bufs ...io.Writer) io.Writer {
	if to != nil {
		bufs = append(bufs, to)
	}
	return io.MultiWriter(bufs...)
}

// Pid is the process id, which is also the id of its process group.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr is what cmd.Wait returned; nil while the process runs.
func (p *Process) ExitErr() error {
	select {
	case <-p.exited:
		return p.waitErr
	default:
		return nil
	}
}

// Output returns what the process has printed on its standard output and
// error so far.
func (p *Process) Output() string { return p.out.String() }

// Stdout returns what the process has printed on its standard output so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Ready is a readiness check: nil once the process does what it is there
// for. ctx ends at the deadline of the wait.
type Ready func(ctx context.Context) error

// WaitReady calls ready until it returns nil: first after a moment, then
// less and less often up to every 50 ms, so that a cheap check is seen at
// once and a costly one does not run hundreds of times a second. It fails
// when the process exits first, or when ready has not held within timeout
// (with ready's last error).
func (p *Process) WaitReady(timeout time.Duration, ready Ready) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	for wait := poll; ; wait = min(2*wait, maxPoll) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready (%v)", p.Name, p.waitErr)
		default:
		}
		if err = ready(ctx); err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready (%v): %w", p.Name, p.waitErr, err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w", p.Name, timeout, err)
		case <-time.After(wait):
		}
	}
}

const (
	poll    = 2 * time.Millisecond
	maxPoll = 50 * time.Millisecond
)

// ErrKilled is wrapped by Stop's error when the process had to be killed.
var ErrKilled = errors.New("killed")

// Stop sends the process SIGTERM and waits for it to exit. When it has not
// exited after grace it kills its process group and waits again, and
// returns an error wrapping ErrKilled. A process that has exited already
// is left as it is.
func (p *Process) Stop(grace time.Duration) error {
	return p.StopWith(syscall.SIGTERM, grace)
}

// StopWith is Stop with another signal than SIGTERM (SIGINT: Ctrl-C).
func (p *Process) StopWith(sig syscall.Signal, grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	p.Kill()
	return fmt.Errorf("%s did not exit within %s of %s: %w", p.Name, grace, sig, ErrKilled)
}

// Kill kills the process group at once, as a crash would, and waits for
// the process to exit.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// Listening is ready once a TCP connection to addr succeeds.
func Listening(addr string) Ready {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Answers is ready once a GET of url gets an answer, whatever its status.
func Answers(url string) Ready {
	return AnswersWith(url, 0)
}

// AnswersWith is ready once a GET of url is answered with status code
// (any status when code is 0).
func AnswersWith(url string, code int) Ready {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if code != 0 && resp.StatusCode != code {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// probeClient keeps no connection open between looks.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// outputLimit bounds what Output keeps of a long-running process.
const outputLimit = 16 << 20

// Output collects a process's output for reading while it runs; past
// 16 MiB it keeps no more.
type Output struct {
	mu        sync.Mutex
	b         bytes.Buffer
	truncated bool
}

// Write appends p to the buffer.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.b.Len()+len(p) > outputLimit {
		o.truncated = true
		return len(p), nil
	}
	return o.b.Write(p)
}

// String returns what was written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.truncated {
		return o.b.String() + "\n[output past 16 MiB not kept]\n"
	}
	return o.b.String()
}
