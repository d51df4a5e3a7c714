package fsm_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func TestScanInstancesVisitsEveryInstanceOnce(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{})
	fsmtest.Apply(t, f, 1, register("a", "1", 1, 100))
	fsmtest.Apply(t, f, 2, register("a", "2", 1, 100))
	fsmtest.Apply(t, f, 3, register("b", "1", 1, 100))
	var got []string
	f.ScanInstances(func(in *fsm.Instance) { got = append(got, in.Service+"/"+in.ID) })
	slices.Sort(got)
	if diff := cmp.Diff([]string{"a/1", "a/2", "b/1"}, got); diff != "" {
		t.Errorf("scanned (-want +got):\n%s", diff)
	}
}

func TestObserveStampSeesTheProposersTimestamps(t *testing.T) {
	var stamps []int64
	f := fsmtest.New(t, fsm.Config{ObserveStamp: func(ns int64) { stamps = append(stamps, ns) }})
	fsmtest.Apply(t, f, 1, register("a", "1", 1, 100))
	fsmtest.Apply(t, f, 2, beats(250, beat("a", "1", 1)))
	fsmtest.Apply(t, f, 3, nodeMeta("n1", "h:1", "h:2")) // carries no timestamp
	fsmtest.Apply(t, f, 4, expire(400, cond("a", "1", 1, 2)))
	if diff := cmp.Diff([]int64{100, 250, 400}, stamps); diff != "" {
		t.Errorf("observed stamps (-want +got):\n%s", diff)
	}
}

// A scan takes the read lock a group of chunks at a time, so Apply runs
// between groups: with beats and registrations (no removal) applied while
// the scan runs, every instance present at the start is visited exactly
// once. Run with -race.
func TestScanInstancesConcurrentWithApply(t *testing.T) {
	const n = 20_000 // several lock groups of chunks
	f := fsmtest.New(t, fsm.Config{HistorySize: 16})
	for i := range n {
		fsmtest.Apply(t, f, uint64(i+1), register("s", fmt.Sprint(i), 1, 100))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		index := uint64(n)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			index++
			if i%2 == 0 {
				fsmtest.Apply(t, f, index, beats(int64(index), beat("s", fmt.Sprint(i%n), 1)))
			} else {
				fsmtest.Apply(t, f, index, register("new", fmt.Sprint(i), 1, 100))
			}
		}
	})
	for range 5 {
		seen := make(map[string]int, n)
		f.ScanInstances(func(in *fsm.Instance) {
			if in.Service == "s" {
				seen[in.ID]++
			}
		})
		for i := range n {
			if c := seen[fmt.Sprint(i)]; c != 1 {
				close(done)
				wg.Wait()
				t.Fatalf("instance s/%d visited %d times by one scan, want once", i, c)
			}
		}
	}
	close(done)
	wg.Wait()
}
