package fsm

// The tests that need the package's internals; every other test is in
// package fsm_test and drives the FSM through its API and fsmtest.

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// CompareInstances orders instances by (Service, ID) for package fsm_test.
var CompareInstances = compareInstances

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

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	err := Config{HistorySize: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "HistorySize is -1") {
		t.Errorf("Validate(HistorySize -1) = %v, want an error naming the value", err)
	}
	f := New(Config{})
	if f.history.size != DefaultHistorySize || f.logger == nil {
		t.Errorf("New(Config{}) history size %d, logger %v: defaults not applied", f.history.size, f.logger)
	}
}
