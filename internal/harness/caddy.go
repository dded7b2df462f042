package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// StartCaddy writes caddyfile into a new file in dir and runs the sdr-caddy
// binary bin on it (`run --config FILE --adapter caddyfile`), named name in
// errors, with dir as its working directory, Caddy's data and config
// directories (XDG_DATA_HOME, XDG_CONFIG_HOME) under dir, and env added to
// this process's environment. It returns once the process has started;
// WaitReady waits for what the Caddyfile serves.
func StartCaddy(name, bin, dir, caddyfile string, env ...string) (*Process, error) {
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
	return Start(name, cmd)
}
