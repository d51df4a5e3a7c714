package fsm_test

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// cowFSM returns an FSM holding n instances of three services (several
// chunks of the store), at index n.
func cowFSM(t *testing.T, n int) *fsm.FSM {
	t.Helper()
	f := fsmtest.New(t, fsm.Config{HistorySize: 16})
	for i := range n {
		fsmtest.Apply(t, f, uint64(i+1), &fsmpb.Register{
			Service: fmt.Sprintf("svc-%d", i%3), Id: fmt.Sprintf("i-%04d", i), Address: "127.0.0.1:1",
			Metadata: map[string]string{"n": fmt.Sprint(i)}, Incarnation: 1, TtlNs: 5e9, NowUnixNs: int64(i + 1),
		})
	}
	return f
}

// TestSnapshotIsPointInTime: what Persist writes is the state at the
// Snapshot call, whatever Apply does between the call and Persist: beats,
// registrations that grow the store by chunks, deregistrations that move
// instances between chunks and shrink the store, re-registrations and a
// second snapshot in between.
func TestSnapshotIsPointInTime(t *testing.T) {
	f := cowFSM(t, 700)
	var want bytes.Buffer
	if _, err := f.WriteSnapshot(&want); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()

	index := uint64(700)
	next := func() uint64 { index++; return index }
	bb := &fsmpb.BeatBatch{NowUnixNs: 9000}
	for i := 0; i < 700; i += 7 {
		bb.Beats = append(bb.Beats, &fsmpb.Beat{Service: fmt.Sprintf("svc-%d", i%3), Id: fmt.Sprintf("i-%04d", i), Incarnation: 1})
	}
	fsmtest.Apply(t, f, next(), bb)
	for i := 0; i < 700; i += 3 {
		fsmtest.Apply(t, f, next(), &fsmpb.Deregister{Service: fmt.Sprintf("svc-%d", i%3), Id: fmt.Sprintf("i-%04d", i), NowUnixNs: 9001})
	}
	fsmtest.Persist(t, f) // a second snapshot while the first is pending
	for i := 700; i < 1000; i++ {
		fsmtest.Apply(t, f, next(), &fsmpb.Register{Service: "late", Id: fmt.Sprint(i), Incarnation: 1, NowUnixNs: 9002})
	}
	fsmtest.Apply(t, f, next(), &fsmpb.Register{Service: "svc-1", Id: "i-0001", Address: "127.0.0.1:2", Incarnation: 2, NowUnixNs: 9003})

	sink := &fsmtest.MemSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), want.Bytes()) {
		t.Fatalf("Persist after writes wrote %d bytes that differ from the %d bytes of the state at Snapshot", sink.Len(), want.Len())
	}
	// And the writes did happen: the live state moved on.
	if now := fsmtest.Persist(t, f); bytes.Equal(now, want.Bytes()) {
		t.Fatal("the state after the writes persists as it did before them")
	}
	fsmtest.SnapshotRestore(t, f)
}

// TestPersistConcurrentWithApply runs Persist of successive snapshots while
// Apply keeps beating, registering and deregistering, as hashicorp/raft
// does; run with -race. Each snapshot must restore to the hash the state
// had when it was taken.
func TestPersistConcurrentWithApply(t *testing.T) {
	f := cowFSM(t, 400)
	index := uint64(400)
	for round := range 5 {
		snap, err := f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		want := f.Hash()
		var wg sync.WaitGroup
		sink := &fsmtest.MemSink{}
		var perr error
		wg.Go(func() { perr = snap.Persist(sink) })
		for i := range 200 {
			index++
			id := fmt.Sprintf("i-%04d", (i*7+round*13)%400)
			svc := fmt.Sprintf("svc-%d", ((i*7+round*13)%400)%3)
			switch i % 4 {
			case 0:
				fsmtest.Apply(t, f, index, &fsmpb.BeatBatch{NowUnixNs: int64(index), Beats: []*fsmpb.Beat{{Service: svc, Id: id, Incarnation: 1}}})
			case 1:
				f.Apply(fsmtest.MakeLog(t, index, &fsmpb.Deregister{Service: svc, Id: id, NowUnixNs: int64(index)}))
			default:
				fsmtest.Apply(t, f, index, &fsmpb.Register{Service: svc, Id: id, Incarnation: 1, TtlNs: 5e9, NowUnixNs: int64(index)})
			}
		}
		wg.Wait()
		snap.Release()
		if perr != nil {
			t.Fatal(perr)
		}
		g := fsmtest.New(t, fsm.DefaultConfig())
		if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
			t.Fatal(err)
		}
		if got := g.Hash(); got != want {
			t.Fatalf("round %d: the snapshot restores to hash %s, want %s (the state at Snapshot)", round, got, want)
		}
	}
}
