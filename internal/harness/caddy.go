package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// StartCaddy writes caddyfile into a new file in dir and runs the sdr-caddy
// binary bin on it (CaddyCommand), named name in errors. It returns once
// the process has started; WaitReady waits for what the Caddyfile serves.
func StartCaddy(name, bin, dir, caddyfile string, env ...string) (*Process, error) {
	cmd, err := CaddyCommand(name, bin, dir, caddyfile, env...)
	if err != nil {
		return nil, err
	}
	return Start(name, cmd)
}

// CaddyCommand writes caddyfile into a new file in dir and returns the
// command that runs the sdr-caddy binary bin on it (`run --config FILE
// --adapter caddyfile`), with dir as its working directory, Caddy's data
// and config directories (XDG_DATA_HOME, XDG_CONFIG_HOME) under dir, and
// env added to this process's environment; name names it in errors.
// Start starts it.
func CaddyCommand(name, bin, dir, caddyfile string, env ...string) (*exec.Cmd, error) {
	f, err := os.CreateTemp(dir, "Caddyfile-*")
	if err != nil {
		return nil, fmt.Errorf("writing the Caddyfile of %s: %w", name, err)
	}
	_, err = f.WriteString(caddyfile)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing the Caddyfile of %s: %w", name, err)
	}
	cmd := exec.Command(bin, "run", "--config", f.Name(), "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	cmd.Env = append(cmd.Env, env...)
	return cmd, nil
}

// LimitFiles makes cmd, not yet started, run with a file descriptor limit
// of n, soft and hard (RLIMIT_NOFILE; with the hard limit at n a Go
// program cannot raise it when it starts): the shell sets it with ulimit
// and then execs cmd's program with its arguments.
func LimitFiles(cmd *exec.Cmd, n int) {
	// sh -c 'script' $0 $@...: the limit, then the command line.
	args := append([]string{"/bin/sh", "-c", `ulimit -n "$0" && exec "$@"`, strconv.Itoa(n), cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = "/bin/sh", args
}
