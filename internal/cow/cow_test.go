package cow

import (
	"slices"
	"sync"
	"testing"
)

func TestListAddRemoveSnapshots(t *testing.T) {
	var l List[int]
	if got := l.Load(); len(got) != 0 {
		t.Fatalf("zero list holds %v", got)
	}
	l.Add(1)
	l.Add(2)
	snap := l.Load()
	l.Add(3)
	l.Remove(1)
	if !slices.Equal(snap, []int{1, 2}) {
		t.Errorf("a snapshot changed under its reader: %v", snap)
	}
	if got := l.Load(); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("list is %v, want [2 3]", got)
	}
}

func TestListConcurrent(t *testing.T) {
	var l List[int]
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			l.Add(i)
			_ = len(l.Load())
			if i%2 == 0 {
				l.Remove(i)
			}
		})
	}
	wg.Wait()
	got := slices.Sorted(slices.Values(l.Load()))
	var want []int
	for i := 1; i < 50; i += 2 {
		want = append(want, i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("list is %v, want the odd numbers below 50", got)
	}
}
