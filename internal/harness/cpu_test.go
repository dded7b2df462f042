package harness

import (
	"os"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// SchedCPUSeconds of this process grows while it works, and agrees with
// CPUSeconds within the latter's ticks.
func TestSchedCPUSeconds(t *testing.T) {
	pid := os.Getpid()
	s0, err := SchedCPUSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := testwait.After(testwait.Default)
	x := 0
	for {
		for i := range 1 << 20 {
			x += i
		}
		s1, err := SchedCPUSeconds(pid)
		if err != nil {
			t.Fatal(err)
		}
		if s1 >= s0+0.05 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("schedstat CPU still %.3f s after %.3f s, x %d", s1, s0, x)
		default:
		}
	}
	sched, err1 := SchedCPUSeconds(pid)
	ticks, err2 := CPUSeconds(pid)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// Each thread's ticks may lag its schedstat by one tick; exited
	// threads count in the ticks only.
	if sched > ticks+0.5 || ticks > sched+0.5 {
		t.Errorf("schedstat %.3f s, ticks %.3f s", sched, ticks)
	}
}
