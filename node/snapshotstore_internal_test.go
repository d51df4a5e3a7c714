package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestTheSnapshotStoreNotesWhenASnapshotIsWritten(t *testing.T) {
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	s := newSnapshotStore(files, dir)
	if m, ok := s.lastSnapshot(); ok {
		t.Fatalf("a store without snapshots says %+v", m)
	}
	write := func(index uint64, keep bool) {
		t.Helper()
		_, trans := raft.NewInmemTransport("")
		sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
		if err != nil {
			t.Fatal(err)
		}
		sink.Write([]byte("state"))
		if keep {
			err = sink.Close()
		} else {
			err = sink.Cancel()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	write(5, false)
	if _, ok := s.lastSnapshot(); ok {
		t.Fatal("a cancelled snapshot counts as written")
	}
	before := time.Now()
	write(6, true)
	m, _ := s.lastSnapshot()
	if m.At.Before(before) || time.Since(m.At) > time.Minute {
		t.Fatalf("after a snapshot: %v, want about now", m.At)
	}
	if m.Index != 6 || m.Term != 1 {
		t.Errorf("after a snapshot at 6 in term 1: index %d term %d", m.Index, m.Term)
	}

	// A store opened later dates its newest snapshot by its directory.
	metas, _ := files.List()
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "snapshots", metas[0].ID), old, old); err != nil {
		t.Fatal(err)
	}
	if m, _ := newSnapshotStore(files, dir).lastSnapshot(); !m.At.Equal(old) || m.Index != 6 || m.Term != 1 {
		t.Errorf("reopened store: snapshot %+v, want index 6 term 1 at %v", m, old)
	}
}
