package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of the times in /proc/<pid>/stat on Linux.
const userHZ = 100

// CPUSeconds returns the user+system CPU time of a process so far.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: %w", pid, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no command field", pid)
	}
	// Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the command.
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields after the command", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (ut + st) / userHZ, nil
}

// TotalCPUSeconds sums the user+system CPU time of the processes (those
// already gone count 0).
func TotalCPUSeconds(pids ...int) float64 {
	total := 0.0
	for _, pid := range pids {
		if c, err := CPUSeconds(pid); err == nil {
			total += c
		}
	}
	return total
}

// RSSKiB returns the resident memory of a process (VmRSS in
// /proc/<pid>/status), in KiB.
func RSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading resident memory of pid %d: %w", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing /proc/%d/status: VmRSS %q", pid, v)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("parsing /proc/%d/status: no VmRSS (a kernel thread?)", pid)
}

// LoadAvg returns the first n (1 to 3) of the machine's load averages over
// 1, 5 and 15 minutes, from /proc/loadavg, joined by commas; "na" where they
// cannot be read.
func LoadAvg(n int) string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "na"
	}
	f := strings.Fields(string(b))
	if len(f) < n {
		return "na"
	}
	return strings.Join(f[:n], ",")
}

// SchedCPUSeconds returns the CPU time of a process so far with the
// scheduler's nanosecond precision: the sum over its threads of the first
// field of /proc/<pid>/task/<tid>/schedstat (time on a CPU, user and
// system). Threads that have exited no longer count, which a Go process
// rarely has. CPUSeconds ticks in hundredths of a second: too coarse for
// windows of a few seconds.
func SchedCPUSeconds(pid int) (float64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("reading the threads of pid %d: %w", pid, err)
	}
	var ns uint64
	n := 0
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s/%s/schedstat: %q", dir, t.Name(), b)
		}
		ns += v
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("no schedstat for the threads of pid %d (a kernel without CONFIG_SCHEDSTATS?)", pid)
	}
	return float64(ns) / 1e9, nil
}
