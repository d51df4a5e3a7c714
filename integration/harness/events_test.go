package harness

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

func TestEventRecorderHandlesResetsAndResumes(t *testing.T) {
	const (
		healthy = registryv1.InstanceState_INSTANCE_STATE_HEALTHY
		suspect = registryv1.InstanceState_INSTANCE_STATE_SUSPECT
	)
	inst := func(id string, state registryv1.InstanceState) *registryv1.Instance {
		return &registryv1.Instance{Service: "s", Id: id, State: state}
	}
	event := func(typ registryv1.EventType, index uint64, in *registryv1.Instance) *registryv1.Event {
		return &registryv1.Event{Type: typ, Index: index, Instance: in}
	}
	key := func(id string) InstanceKey { return InstanceKey{Service: "s", ID: id} }
	type view = map[InstanceKey]registryv1.InstanceState
	check := func(r *EventRecorder, step string, wantIndex uint64, wantView view) {
		t.Helper()
		if got := r.Index(); got != wantIndex {
			t.Errorf("%s: index %d, want %d", step, got, wantIndex)
		}
		if diff := cmp.Diff(wantView, r.View()); diff != "" {
			t.Errorf("%s: view (-want +got):\n%s", step, diff)
		}
	}
	eventTypes := func(r *EventRecorder) []string {
		var out []string
		for _, ev := range r.Events() {
			out = append(out, ev.GetType().String()+" "+ev.Key().String())
		}
		return out
	}

	r := newEventRecorder([]*Node{{id: "n1"}, {id: "n2"}}, nil)
	at := time.Now()

	// The initial reset, in two messages: nothing counts before the last.
	var stream1 pendingReset
	r.receive(&stream1, &registryv1.WatchResponse{IsReset: true, Index: 10, More: true,
		Instances: []*registryv1.Instance{inst("a", healthy), inst("b", healthy)}}, at, "n1")
	check(r, "first half of the reset", 0, view{})
	r.receive(&stream1, &registryv1.WatchResponse{Index: 10,
		Instances: []*registryv1.Instance{inst("c", suspect)}}, at, "n1")
	check(r, "whole reset", 10, view{key("a"): healthy, key("b"): healthy, key("c"): suspect})

	// Events; then, on another node resumed after index 12, one again.
	r.receive(&stream1, &registryv1.WatchResponse{Index: 12, Events: []*registryv1.Event{
		event(registryv1.EventType_EVENT_TYPE_EXPIRED, 11, inst("b", healthy)),
		event(registryv1.EventType_EVENT_TYPE_REGISTERED, 12, inst("d", healthy)),
	}}, at, "n1")
	var stream2 pendingReset
	r.receive(&stream2, &registryv1.WatchResponse{Index: 13, Events: []*registryv1.Event{
		event(registryv1.EventType_EVENT_TYPE_REGISTERED, 12, inst("d", healthy)),
		event(registryv1.EventType_EVENT_TYPE_SUSPECT, 13, inst("a", suspect)),
	}}, at, "n2")
	check(r, "events", 13, view{key("a"): suspect, key("c"): suspect, key("d"): healthy})

	// A reset whose stream breaks before its last message changes nothing.
	var broken pendingReset
	r.receive(&broken, &registryv1.WatchResponse{IsReset: true, Index: 20, More: true,
		Instances: []*registryv1.Instance{inst("a", suspect)}}, at, "n1")
	check(r, "unfinished reset", 13, view{key("a"): suspect, key("c"): suspect, key("d"): healthy})

	// A reset after a gap replaces the view and says what the gap hid.
	var stream3 pendingReset
	r.receive(&stream3, &registryv1.WatchResponse{IsReset: true, Index: 30,
		Instances: []*registryv1.Instance{inst("a", suspect), inst("d", healthy), inst("e", healthy)}}, at, "n2")
	check(r, "reset after a gap", 30, view{key("a"): suspect, key("d"): healthy, key("e"): healthy})
	resets := r.Resets()
	if len(resets) != 2 {
		t.Fatalf("%d resets recorded, want 2: %+v", len(resets), resets)
	}
	if !resets[0].Initial || resets[0].Instances != 3 || resets[0].Index != 10 {
		t.Errorf("initial reset recorded as %+v", resets[0])
	}
	if diff := cmp.Diff([]InstanceKey{key("c")}, resets[1].Vanished); diff != "" || resets[1].Initial {
		t.Errorf("second reset: initial %v, vanished (-want +got):\n%s", resets[1].Initial, diff)
	}
	if diff := cmp.Diff([]InstanceKey{key("e")}, resets[1].Appeared); diff != "" {
		t.Errorf("second reset: appeared (-want +got):\n%s", diff)
	}

	// Events the reset covers are not recorded.
	r.receive(&stream3, &registryv1.WatchResponse{Index: 31, Events: []*registryv1.Event{
		event(registryv1.EventType_EVENT_TYPE_REGISTERED, 30, inst("e", healthy)),
		event(registryv1.EventType_EVENT_TYPE_REACQUIRED, 31, inst("a", healthy)),
	}}, at, "n2")
	check(r, "events after the reset", 31, view{key("a"): healthy, key("d"): healthy, key("e"): healthy})
	want := []string{
		"EVENT_TYPE_EXPIRED s/b",
		"EVENT_TYPE_REGISTERED s/d",
		"EVENT_TYPE_SUSPECT s/a",
		"EVENT_TYPE_REACQUIRED s/a",
	}
	if diff := cmp.Diff(want, eventTypes(r)); diff != "" {
		t.Errorf("recorded events (-want +got):\n%s", diff)
	}

	if err := r.WaitIndex(t.Context(), 31); err != nil {
		t.Errorf("WaitIndex(31) at index 31: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := r.WaitIndex(ctx, 32); err == nil {
		t.Error("WaitIndex(32) at index 31 returned without an error")
	}
}
