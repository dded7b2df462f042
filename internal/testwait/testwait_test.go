package testwait

import (
	"testing"
	"time"
)

func TestTimeoutScales(t *testing.T) {
	if got := Timeout(time.Second); got != time.Duration(float64(time.Second)*Scale()) {
		t.Fatalf("Timeout(1s) = %s with scale %g", got, Scale())
	}
}

func TestUntilSeesTheCondition(t *testing.T) {
	n := 0
	if !Until(time.Second, func() bool { n++; return n == 3 }) {
		t.Fatalf("Until gave up after %d looks", n)
	}
	if Until(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
}

func TestRecvTakesTheValue(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if v := Recv(t, ch, "a value"); v != 7 {
		t.Fatalf("Recv = %d, want 7", v)
	}
}

// Under -race every deadline is RaceFactor times longer.
func TestRaceStretchesDeadlines(t *testing.T) {
	if !RaceEnabled {
		t.Skip("only under -race")
	}
	if Timeout(time.Second) < RaceFactor*time.Second {
		t.Errorf("Timeout(1s) = %s under -race, want at least %d s", Timeout(time.Second), RaceFactor)
	}
}
