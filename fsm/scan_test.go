package fsm_test

import (
	"slices"
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
