package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func TestWriteSnapshotWritesTheSnapshotStream(t *testing.T) {
	f := populated(t)
	var buf bytes.Buffer
	info, err := f.WriteSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), fsmtest.Persist(t, f)) {
		t.Error("WriteSnapshot and Snapshot().Persist wrote different streams")
	}
	if want := (fsm.SnapshotInfo{Index: 7, Instances: 3, Nodes: 2}); info != want {
		t.Errorf("WriteSnapshot info = %+v, want %+v", info, want)
	}
}

// A backup restored into another cluster brings the backup's instances and
// keeps the target's nodes; its index is the one raft installs it at.
func TestPrepareRestoreKeepsTheTargetsNodesAndTakesTheIndex(t *testing.T) {
	backup := populated(t)
	var saved bytes.Buffer
	if _, err := backup.WriteSnapshot(&saved); err != nil {
		t.Fatal(err)
	}

	target := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, target, 1, nodeMeta("x1", "x:1", "x:2"))
	fsmtest.Apply(t, target, 2, register("other", "o1", 1, 100))
	before := target.Hash()

	var prepared bytes.Buffer
	info, err := target.PrepareRestore(bytes.NewReader(saved.Bytes()), 42, &prepared)
	if err != nil {
		t.Fatal(err)
	}
	if want := (fsm.SnapshotInfo{Index: 42, Instances: 3, Nodes: 1}); info != want {
		t.Errorf("PrepareRestore info = %+v, want %+v", info, want)
	}
	if target.Hash() != before {
		t.Error("PrepareRestore changed the FSM")
	}

	fresh := fsmtest.New(t, fsm.DefaultConfig())
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(prepared.Bytes()))); err != nil {
		t.Fatal(err)
	}
	wantInstances, _ := backup.Instances()
	gotInstances, gotIndex := fresh.Instances()
	if diff := cmp.Diff(wantInstances, gotInstances); diff != "" || gotIndex != 42 {
		t.Errorf("restored index %d, want 42; instances (-backup +restored):\n%s", gotIndex, diff)
	}
	if diff := cmp.Diff(target.Nodes(), fresh.Nodes()); diff != "" {
		t.Errorf("restored nodes are not the target's (-target +restored):\n%s", diff)
	}
}

func TestPrepareRestoreRefusesABadBackup(t *testing.T) {
	var saved bytes.Buffer
	if _, err := populated(t).WriteSnapshot(&saved); err != nil {
		t.Fatal(err)
	}
	data := saved.Bytes()
	tests := map[string][]byte{
		"empty":     nil,
		"truncated": data[:len(data)-3],
		"trailing":  append(bytes.Clone(data), 0),
		"garbage":   []byte("not a snapshot at all"),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := fsm.New(fsm.Config{}).PrepareRestore(bytes.NewReader(in), 9, &out)
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Errorf("PrepareRestore = %v, want ErrBadSnapshot", err)
			}
		})
	}
	readErr := errors.New("stream broke")
	_, err := fsm.New(fsm.Config{}).PrepareRestore(&failingReader{data: data[:10], err: readErr}, 9, &bytes.Buffer{})
	if !errors.Is(err, fsm.ErrBadSnapshot) || !errors.Is(err, readErr) {
		t.Errorf("PrepareRestore over a failing reader = %v, want ErrBadSnapshot wrapping the reader's error", err)
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// Restoring an older snapshot over an FSM that has applied more moves its
// index forward, so that every watcher resets, and tells OnRestore.
func TestRestoreNeverMovesTheIndexBack(t *testing.T) {
	old := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, old, 3, register("a", "a1", 1, 100))
	snapshot := fsmtest.Persist(t, old)

	var restored []uint64
	cfg := fsm.DefaultConfig()
	cfg.OnRestore = func(index uint64) { restored = append(restored, index) }
	f := fsmtest.New(t, cfg)
	for i := uint64(1); i <= 7; i++ {
		fsmtest.Apply(t, f, i, register("b", "b1", 1, int64(i)))
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshot))); err != nil {
		t.Fatal(err)
	}
	if got := f.AppliedIndex(); got != 8 {
		t.Errorf("AppliedIndex after restoring index 3 over 7 = %d, want 8", got)
	}
	if _, _, err := f.EventsAfter("", 7, 0); !errors.Is(err, fsm.ErrCompacted) {
		t.Errorf("EventsAfter(7) = %v, want ErrCompacted: a watcher at 7 must reset", err)
	}
	if diff := cmp.Diff([]uint64{8}, restored); diff != "" {
		t.Errorf("OnRestore calls (-want +got):\n%s", diff)
	}

	// A fresh FSM takes the snapshot's own index.
	g := fsmtest.New(t, fsm.DefaultConfig())
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshot))); err != nil || g.AppliedIndex() != 3 {
		t.Errorf("fresh Restore: index %d, error %v; want 3, nil", g.AppliedIndex(), err)
	}
}

func TestObserveEventsSeesEveryEvent(t *testing.T) {
	var got []string
	cfg := fsm.DefaultConfig()
	cfg.ObserveEvents = func(events []fsm.Event) {
		for _, ev := range events {
			got = append(got, ev.Type.String())
		}
	}
	f := fsmtest.New(t, cfg)
	fsmtest.Apply(t, f, 1, register("a", "a1", 1, 100))
	fsmtest.Apply(t, f, 2, beats(200, beat("a", "a1", 1))) // a plain beat: no event
	fsmtest.Apply(t, f, 3, suspect(300, cond("a", "a1", 1, 2)))
	fsmtest.Apply(t, f, 4, beats(400, beat("a", "a1", 1)))
	fsmtest.Apply(t, f, 5, expire(500, cond("a", "a1", 1, 4)))
	want := []string{"REGISTERED", "SUSPECT", "REACQUIRED", "EXPIRED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("observed events (-want +got):\n%s", diff)
	}
}
