package fsm_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// writeBatch builds a WriteBatch of *fsmpb.Register and *fsmpb.Deregister
// messages (nil: an empty write).
func writeBatch(writes ...proto.Message) *fsmpb.WriteBatch {
	c := &fsmpb.WriteBatch{}
	for _, w := range writes {
		switch m := w.(type) {
		case *fsmpb.Register:
			c.Writes = append(c.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: m}})
		case *fsmpb.Deregister:
			c.Writes = append(c.Writes, &fsmpb.Write{Op: &fsmpb.Write_Deregister{Deregister: m}})
		default:
			c.Writes = append(c.Writes, &fsmpb.Write{})
		}
	}
	return c
}

// wantWrite is the expected outcome of one write: a register result, a
// deregister result, or an error (errors.Is).
type wantWrite struct {
	register   *fsm.RegisterResult
	deregister *fsm.DeregisterResult
	err        error
}

func checkWrites(t *testing.T, resp any, index uint64, want []wantWrite) {
	t.Helper()
	res, ok := resp.(*fsm.WriteBatchResult)
	if !ok {
		t.Fatalf("Apply response is %T (%v), want *fsm.WriteBatchResult", resp, resp)
	}
	if res.Index != index {
		t.Errorf("Index = %d, want %d", res.Index, index)
	}
	if len(res.Results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(res.Results), len(want), res.Results)
	}
	for i, w := range want {
		got := res.Results[i]
		if w.err != nil {
			if !errors.Is(got.Err, w.err) || got.Register != nil || got.Deregister != nil {
				t.Errorf("write %d: got %+v, want only the error %v", i, got, w.err)
			}
			continue
		}
		if got.Err != nil {
			t.Errorf("write %d: error %v, want success", i, got.Err)
			continue
		}
		if diff := cmp.Diff(w.register, got.Register); diff != "" {
			t.Errorf("write %d: register result (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(w.deregister, got.Deregister); diff != "" {
			t.Errorf("write %d: deregister result (-want +got):\n%s", i, diff)
		}
	}
}

func TestWriteBatchFailsOnlyTheWriteThatFails(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{})
	fsmtest.Apply(t, f, 1, register("orders", "o-1", 5, 100))

	resp := fsmtest.Apply(t, f, 2, writeBatch(
		register("orders", "o-1", 4, 200), // fenced: o-1 is at incarnation 5
		register("orders", "o-2", 1, 200), // its neighbour applies
		deregister("orders", "nope", 0, 200),
		nil,                                 // an empty write
		deregister("orders", "o-1", 3, 200), // fenced
		register("web", "w-1", 1, 200),
	))
	checkWrites(t, resp, 2, []wantWrite{
		{err: fsm.ErrFenced},
		{register: &fsm.RegisterResult{Index: 2, Instance: registered("orders", "o-2", 1, 2, 200), Created: true}},
		{err: fsm.ErrNotFound},
		{err: fsm.ErrEmptyWrite},
		{err: fsm.ErrFenced},
		{register: &fsm.RegisterResult{Index: 2, Instance: registered("web", "w-1", 1, 2, 200), Created: true}},
	})

	all, index := f.Instances()
	want := []fsm.Instance{
		registered("orders", "o-1", 5, 1, 100),
		registered("orders", "o-2", 1, 2, 200),
		registered("web", "w-1", 1, 2, 200),
	}
	if diff := cmp.Diff(want, all); diff != "" || index != 2 {
		t.Errorf("Instances() at index %d, want 2 (-want +got):\n%s", index, diff)
	}
	wantEvents := []fsm.Event{
		{Type: fsm.EventRegistered, Index: 2, Instance: registered("orders", "o-2", 1, 2, 200), At: 200},
		{Type: fsm.EventRegistered, Index: 2, Instance: registered("web", "w-1", 1, 2, 200), At: 200},
	}
	if diff := cmp.Diff(wantEvents, eventsAfter(t, f, 1)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestWriteBatchAppliesWritesInOrder(t *testing.T) {
	t.Run("register then deregister the same id", func(t *testing.T) {
		f := fsmtest.New(t, fsm.Config{})
		resp := fsmtest.Apply(t, f, 1, writeBatch(
			register("orders", "o-1", 1, 100),
			deregister("orders", "o-1", 1, 100),
		))
		in := registered("orders", "o-1", 1, 1, 100)
		checkWrites(t, resp, 1, []wantWrite{
			{register: &fsm.RegisterResult{Index: 1, Instance: in, Created: true}},
			{deregister: &fsm.DeregisterResult{Index: 1, Instance: in}},
		})
		if all, _ := f.Instances(); len(all) != 0 {
			t.Errorf("Instances() = %v, want none", all)
		}
		want := []fsm.Event{
			{Type: fsm.EventRegistered, Index: 1, Instance: in, At: 100},
			{Type: fsm.EventDeregistered, Index: 1, Instance: in, At: 100},
		}
		if diff := cmp.Diff(want, eventsAfter(t, f, 0)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("deregister then register the same id", func(t *testing.T) {
		f := fsmtest.New(t, fsm.Config{})
		resp := fsmtest.Apply(t, f, 1, writeBatch(
			deregister("orders", "o-1", 0, 100), // not there yet
			register("orders", "o-1", 1, 100),
		))
		in := registered("orders", "o-1", 1, 1, 100)
		checkWrites(t, resp, 1, []wantWrite{
			{err: fsm.ErrNotFound},
			{register: &fsm.RegisterResult{Index: 1, Instance: in, Created: true}},
		})
		if all, _ := f.Instances(); !cmp.Equal(all, []fsm.Instance{in}) {
			t.Errorf("Instances() = %v, want %v", all, in)
		}
	})
	t.Run("a later incarnation fences an earlier one in the same batch", func(t *testing.T) {
		f := fsmtest.New(t, fsm.Config{})
		resp := fsmtest.Apply(t, f, 1, writeBatch(
			register("orders", "o-1", 2, 100),
			register("orders", "o-1", 1, 100),
		))
		checkWrites(t, resp, 1, []wantWrite{
			{register: &fsm.RegisterResult{Index: 1, Instance: registered("orders", "o-1", 2, 1, 100), Created: true}},
			{err: fsm.ErrFenced},
		})
	})
}

// A write in a batch gets the result it would get alone: the same
// registrations applied one per entry and as one batch leave the same
// instances, but for the indexes.
func TestWriteBatchMatchesSingleWrites(t *testing.T) {
	writes := []proto.Message{
		register("orders", "o-1", 1, 100),
		register("orders", "o-1", 1, 100), // same incarnation: an idempotent upsert
		register("orders", "o-2", 3, 100),
		register("orders", "o-2", 2, 100), // fenced
		deregister("orders", "o-3", 0, 100),
		register("orders", "o-3", 1, 100),
		deregister("orders", "o-1", 1, 100),
	}
	single, batched := fsmtest.New(t, fsm.Config{}), fsmtest.New(t, fsm.Config{})
	var singleErrs []error
	for i, w := range writes {
		resp := fsmtest.Apply(t, single, uint64(i+1), w)
		err, _ := resp.(error)
		singleErrs = append(singleErrs, err)
	}
	res := fsmtest.Apply(t, batched, 1, writeBatch(writes...)).(*fsm.WriteBatchResult)
	for i, r := range res.Results {
		if (r.Err == nil) != (singleErrs[i] == nil) || (r.Err != nil && r.Err.Error() != singleErrs[i].Error()) {
			t.Errorf("write %d: batched error %v, alone %v", i, r.Err, singleErrs[i])
		}
	}
	ignoreIndexes := cmp.Transformer("noIndexes", func(in fsm.Instance) fsm.Instance {
		in.CreateIndex, in.ModifyIndex, in.LastBeatIndex = 0, 0, 0
		return in
	})
	a, _ := single.Instances()
	b, _ := batched.Instances()
	if diff := cmp.Diff(a, b, ignoreIndexes); diff != "" {
		t.Errorf("instances (-alone +batched):\n%s", diff)
	}
}
