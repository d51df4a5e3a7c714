package fsm

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm/fsmpb"
)

func TestScanInstancesVisitsEveryInstanceOnce(t *testing.T) {
	f := newTestFSM(t, Config{})
	apply(t, f, 1, register("a", "1", 1, 100))
	apply(t, f, 2, register("a", "2", 1, 100))
	apply(t, f, 3, register("b", "1", 1, 100))
	var got []string
	f.ScanInstances(func(in *Instance) { got = append(got, in.Service+"/"+in.ID) })
	slices.Sort(got)
	if diff := cmp.Diff([]string{"a/1", "a/2", "b/1"}, got); diff != "" {
		t.Errorf("scanned (-want +got):\n%s", diff)
	}
}

func TestObserveStampSeesTheProposersTimestamps(t *testing.T) {
	var stamps []int64
	f := newTestFSM(t, Config{ObserveStamp: func(ns int64) { stamps = append(stamps, ns) }})
	apply(t, f, 1, register("a", "1", 1, 100))
	apply(t, f, 2, beats(250, beat("a", "1", 1)))
	apply(t, f, 3, nodeMeta("n1", "h:1", "h:2")) // carries no timestamp
	apply(t, f, 4, expire(400, cond("a", "1", 1, 2)))
	if diff := cmp.Diff([]int64{100, 250, 400}, stamps); diff != "" {
		t.Errorf("observed stamps (-want +got):\n%s", diff)
	}
}

// The instances live in a dense slice with an index: removals from the
// middle, the front and the end must keep every lookup, beat and scan
// pointing at the right instance.
func TestRemovalsKeepTheIndexRight(t *testing.T) {
	s := NewState()
	ids := []string{"0", "1", "2", "3", "4", "5"}
	for i, id := range ids {
		s.put(Instance{Service: []string{"a", "b"}[i%2], ID: id, Incarnation: 1, LastBeatIndex: uint64(i)})
	}
	s.remove("a", "2") // middle
	s.remove("a", "0") // front
	s.remove("b", "5") // last
	s.remove("b", "9") // absent: nothing happens
	want := map[string]uint64{"b/1": 1, "b/3": 3, "a/4": 4}
	got := map[string]uint64{}
	s.scan(func(in *Instance) { got[in.Service+"/"+in.ID] = in.LastBeatIndex })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("scanned (-want +got):\n%s", diff)
	}
	for key, idx := range want {
		svc, id, _ := strings.Cut(key, "/")
		if in, ok := s.Get(svc, id); !ok || in.LastBeatIndex != idx {
			t.Errorf("Get(%s) = %+v, %v; want LastBeatIndex %d", key, in, ok, idx)
		}
	}
	for _, key := range []string{"a/0", "a/2", "b/5"} {
		svc, id, _ := strings.Cut(key, "/")
		if _, ok := s.Get(svc, id); ok {
			t.Errorf("Get(%s) found a removed instance", key)
		}
	}
	res, _ := s.BeatBatch(10, &fsmpb.BeatBatch{NowUnixNs: 7, Beats: []*fsmpb.Beat{{Service: "a", Id: "4", Incarnation: 1}, {Service: "a", Id: "2", Incarnation: 1}}})
	if len(res.Rejected) != 1 || res.Rejected[0].ID != "2" || res.Rejected[0].Reason != RejectUnknown {
		t.Errorf("beat rejections %+v; want a/2 unknown only", res.Rejected)
	}
	if in, _ := s.Get("a", "4"); in.LastBeatIndex != 10 || in.LastBeatAt != 7 {
		t.Errorf("a/4 after the beat: %+v; want LastBeatIndex 10, LastBeatAt 7", in)
	}
	if in, _ := s.Get("b", "3"); in.LastBeatIndex != 3 {
		t.Errorf("b/3 changed by a beat for a/4: %+v", in)
	}
	if svcs := s.Services(); len(svcs) != 2 || svcs[0].Healthy != 1 || svcs[1].Healthy != 2 {
		t.Errorf("services %+v; want a with 1, b with 2", svcs)
	}
	s.remove("a", "4")
	if svcs := s.Services(); len(svcs) != 1 || svcs[0].Service != "b" {
		t.Errorf("services after the last of a left: %+v; want only b", svcs)
	}
}
