package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// indexes returns the index and instance id of each event.
func indexes(events []fsm.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%d:%s/%s", e.Index, e.Instance.Service, e.Instance.ID))
	}
	return out
}

func TestHistoryEviction(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{HistorySize: 3})
	for i := uint64(1); i <= 5; i++ {
		fsmtest.Apply(t, f, i, register("svc", fmt.Sprint("i", i), 1, int64(i)))
	}
	// Events 1 and 2 were evicted: the floor is 2.
	for _, after := range []uint64{0, 1} {
		if _, _, err := f.EventsAfter("", after, 0); !errors.Is(err, fsm.ErrCompacted) {
			t.Errorf("EventsAfter(%d) error = %v, want ErrCompacted", after, err)
		}
	}
	events, next, err := f.EventsAfter("", 2, 0)
	if err != nil {
		t.Fatalf("EventsAfter(2): %v", err)
	}
	if diff := cmp.Diff([]string{"3:svc/i3", "4:svc/i4", "5:svc/i5"}, indexes(events)); diff != "" || next != 5 {
		t.Errorf("EventsAfter(2) next %d (-want +got):\n%s", next, diff)
	}

	// The ring has wrapped; the binary search must still find the start.
	for after, want := range map[uint64][]string{
		3: {"4:svc/i4", "5:svc/i5"},
		4: {"5:svc/i5"},
		5: nil,
	} {
		events, next, err := f.EventsAfter("", after, 0)
		if err != nil {
			t.Fatalf("EventsAfter(%d): %v", after, err)
		}
		if diff := cmp.Diff(want, indexes(events)); diff != "" || next != 5 {
			t.Errorf("EventsAfter(%d) next %d (-want +got):\n%s", after, next, diff)
		}
	}
}

func TestHistoryEvictsPartOfAnIndex(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{HistorySize: 2})
	fsmtest.Apply(t, f, 1, register("svc", "a", 1, 1))
	fsmtest.Apply(t, f, 2, register("svc", "b", 1, 2))
	fsmtest.Apply(t, f, 3, register("svc", "c", 1, 3))
	fsmtest.Apply(t, f, 4, expire(4, cond("svc", "a", 1, 1), cond("svc", "b", 1, 2), cond("svc", "c", 1, 3)))
	// The ring holds two of the three events at index 4: index 4 is incomplete.
	if _, _, err := f.EventsAfter("", 3, 0); !errors.Is(err, fsm.ErrCompacted) {
		t.Errorf("EventsAfter(3) error = %v, want ErrCompacted", err)
	}
	if events, next, err := f.EventsAfter("", 4, 0); err != nil || len(events) != 0 || next != 4 {
		t.Errorf("EventsAfter(4) = %v, %d, %v; want none, 4, nil", events, next, err)
	}
}

// historyFSM applies commands that emit several events at one index and
// events of two services.
func historyFSM(t *testing.T) *fsm.FSM {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, register("a", "a1", 1, 1))
	fsmtest.Apply(t, f, 2, register("b", "b1", 1, 2))
	fsmtest.Apply(t, f, 3, register("a", "a2", 1, 3))
	fsmtest.Apply(t, f, 4, register("b", "b2", 1, 4))
	fsmtest.Apply(t, f, 5, expire(5, cond("a", "a1", 1, 1), cond("b", "b1", 1, 2), cond("a", "a2", 1, 3)))
	fsmtest.Apply(t, f, 6, nodeMeta("n1", "x", "y"))
	fsmtest.Apply(t, f, 7, register("a", "a3", 1, 7))
	fsmtest.Apply(t, f, 8, nodeMeta("n2", "x", "y"))
	return f
}

func TestEventsAfterLimit(t *testing.T) {
	f := historyFSM(t)
	type page struct {
		events []string
		next   uint64
	}
	tests := []struct {
		service string
		limit   int
		pages   []page
	}{
		{"", 0, []page{{[]string{"1:a/a1", "2:b/b1", "3:a/a2", "4:b/b2", "5:a/a1", "5:b/b1", "5:a/a2", "7:a/a3"}, 8}}},
		{"", 2, []page{
			{[]string{"1:a/a1", "2:b/b1"}, 2},
			{[]string{"3:a/a2", "4:b/b2"}, 4},
			{[]string{"5:a/a1", "5:b/b1", "5:a/a2"}, 5}, // one index is never split
			{[]string{"7:a/a3"}, 8},
			{nil, 8},
		}},
		{"", 4, []page{
			{[]string{"1:a/a1", "2:b/b1", "3:a/a2", "4:b/b2"}, 4},
			{[]string{"5:a/a1", "5:b/b1", "5:a/a2", "7:a/a3"}, 8}, // full, but nothing follows
			{nil, 8},
		}},
		{"a", 1, []page{
			{[]string{"1:a/a1"}, 1},
			{[]string{"3:a/a2"}, 3},
			{[]string{"5:a/a1", "5:a/a2"}, 5},
			{[]string{"7:a/a3"}, 8},
			{nil, 8},
		}},
		{"b", 0, []page{{[]string{"2:b/b1", "4:b/b2", "5:b/b1"}, 8}}},
		{"b", 2, []page{
			{[]string{"2:b/b1", "4:b/b2"}, 4},
			{[]string{"5:b/b1"}, 8},
		}},
		{"none", 1, []page{{nil, 8}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/%d", tt.service, tt.limit), func(t *testing.T) {
			after := uint64(0)
			for i, want := range tt.pages {
				events, next, err := f.EventsAfter(tt.service, after, tt.limit)
				if err != nil {
					t.Fatalf("page %d: EventsAfter(%d): %v", i, after, err)
				}
				if diff := cmp.Diff(want, page{indexes(events), next}, cmp.AllowUnexported(page{})); diff != "" {
					t.Errorf("page %d: EventsAfter(%q, %d, %d) (-want +got):\n%s", i, tt.service, after, tt.limit, diff)
				}
				after = next
			}
		})
	}
}

func TestEventsAfterBeyondApplied(t *testing.T) {
	f := historyFSM(t)
	events, next, err := f.EventsAfter("", 20, 10)
	if err != nil || events != nil || next != 20 {
		t.Errorf("EventsAfter(20) = %v, %d, %v; want none, 20, nil", events, next, err)
	}
}

func TestRestoreClearsHistory(t *testing.T) {
	f := historyFSM(t)
	g := fsmtest.SnapshotRestore(t, f)
	if _, _, err := g.EventsAfter("", 7, 0); !errors.Is(err, fsm.ErrCompacted) {
		t.Errorf("EventsAfter(7) after Restore error = %v, want ErrCompacted", err)
	}
	if events, next, err := g.EventsAfter("", 8, 0); err != nil || events != nil || next != 8 {
		t.Errorf("EventsAfter(8) after Restore = %v, %d, %v; want none, 8, nil", events, next, err)
	}
	fsmtest.Apply(t, g, 9, register("a", "a9", 1, 9))
	if diff := cmp.Diff([]string{"9:a/a9"}, indexes(eventsAfter(t, g, 8))); diff != "" {
		t.Errorf("events after Restore (-want +got):\n%s", diff)
	}

	// Restoring over an FSM with history drops it too.
	if err := f.Restore(io.NopCloser(bytes.NewReader(fsmtest.Persist(t, g)))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.EventsAfter("", 0, 0); !errors.Is(err, fsm.ErrCompacted) {
		t.Errorf("EventsAfter(0) after Restore error = %v, want ErrCompacted", err)
	}
	if got := indexes(eventsAfter(t, f, 9)); got != nil {
		t.Errorf("events kept across Restore: %v", got)
	}
}

// A watcher that resets and then follows the events sees the same instances
// as a fresh read after every command, except for the beat fields, which
// plain beats change without an event.
func TestResetThenFollow(t *testing.T) {
	cmds := []proto.Message{
		register("a", "a1", 1, 100),
		register("b", "b1", 1, 200),
		register("a", "a2", 1, 300),
		beats(400, beat("a", "a1", 1), beat("a", "a2", 1), beat("b", "b1", 1)),
		suspect(500, cond("a", "a1", 1, 4), cond("b", "b1", 1, 4)),
		beats(600, beat("a", "a1", 1)),
		func() proto.Message { c := register("a", "a2", 1, 700); c.Address = "new"; return c }(),
		register("a", "a2", 2, 800),
		expire(900, cond("a", "a1", 1, 6), cond("b", "b1", 1, 4)),
		deregister("a", "a2", 0, 1000),
		register("a", "a3", 1, 1100),
		register("b", "b2", 1, 1200),
	}
	ignoreBeats := cmp.Transformer("ignoreBeats", func(in fsm.Instance) fsm.Instance {
		in.LastBeatIndex, in.LastBeatAt = 0, 0
		return in
	})

	f := fsmtest.New(t, fsm.DefaultConfig())
	watched, index := f.Reset("a")
	view := make(map[string]fsm.Instance)
	for _, in := range watched {
		view[in.ID] = in
	}
	for i, cmd := range cmds {
		fsmtest.Apply(t, f, uint64(i+1), cmd)
		for range 100 { // bounded: a bug that re-serves events must fail, not hang
			events, next, err := f.EventsAfter("a", index, 1)
			if err != nil {
				t.Fatalf("after command %d: %v", i+1, err)
			}
			index = next
			if len(events) == 0 {
				break
			}
			for _, e := range events {
				switch e.Type {
				case fsm.EventDeregistered, fsm.EventExpired:
					delete(view, e.Instance.ID)
				default:
					view[e.Instance.ID] = e.Instance
				}
			}
		}
		want, _ := f.Reset("a")
		got := slices.SortedFunc(maps.Values(view), fsm.CompareInstances)
		if diff := cmp.Diff(want, got, ignoreBeats); diff != "" {
			t.Fatalf("after command %d: watcher view (-reset +view):\n%s", i+1, diff)
		}
		if index != uint64(i+1) {
			t.Fatalf("after command %d: watcher index %d", i+1, index)
		}
	}
}

// A watcher that has read everything must not be reset by one entry: the
// default history holds a whole sweep of the expiry checker (beatcheck's
// defaults: 10,000 SUSPECT marks and 1,000 expiries), so that a sweep over
// a large fleet does not turn every watch of the node into a reset.
func TestTheDefaultHistoryHoldsAWholeSweep(t *testing.T) {
	const suspects, expiries = 10_000, 1_000
	f := fsmtest.New(t, fsm.Config{})
	var index uint64
	for i := range suspects + expiries {
		index++
		fsmtest.Apply(t, f, index, register("svc", fmt.Sprint("i", i), 1, 1))
	}
	read := index // the watcher has read every registration
	var marks, ends []*fsmpb.Condition
	for i := range suspects + expiries {
		c := cond("svc", fmt.Sprint("i", i), 1, uint64(i+1))
		if i < suspects {
			marks = append(marks, c)
		} else {
			ends = append(ends, c)
		}
	}
	index++
	fsmtest.Apply(t, f, index, suspect(2, marks...))
	index++
	fsmtest.Apply(t, f, index, expire(3, ends...))
	events, _, err := f.EventsAfter("", read, 0)
	if err != nil {
		t.Fatalf("EventsAfter(%d) after one sweep's entries: %v, want the sweep's events", read, err)
	}
	if len(events) != suspects+expiries {
		t.Errorf("EventsAfter(%d) returned %d events, want %d", read, len(events), suspects+expiries)
	}
}
