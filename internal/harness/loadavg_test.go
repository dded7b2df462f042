package harness

import (
	"strconv"
	"strings"
	"testing"
)

func TestLoadAvg(t *testing.T) {
	for n := 1; n <= 3; n++ {
		got := LoadAvg(n)
		f := strings.Split(got, ",")
		if len(f) != n {
			t.Fatalf("LoadAvg(%d) = %q, want %d numbers", n, got, n)
		}
		for _, v := range f {
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				t.Fatalf("LoadAvg(%d) = %q: %v", n, got, err)
			}
		}
	}
	if got := LoadAvg(9); got != "na" {
		t.Fatalf("LoadAvg(9) = %q, want na (loadavg has fewer numbers)", got)
	}
}
