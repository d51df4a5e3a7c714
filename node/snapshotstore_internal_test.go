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
	if !s.lastAt().IsZero() {
		t.Fatalf("a store without snapshots says %v", s.lastAt())
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
	if !s.lastAt().IsZero() {
		t.Fatal("a cancelled snapshot counts as written")
	}
	before := time.Now()
	write(6, true)
	if at := s.lastAt(); at.Before(before) || time.Since(at) > time.Minute {
		t.Fatalf("after a snapshot: %v, want about now", at)
	}

	// A store opened later dates its newest snapshot by its directory.
	metas, _ := files.List()
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "snapshots", metas[0].ID), old, old); err != nil {
		t.Fatal(err)
	}
	if at := newSnapshotStore(files, dir).lastAt(); !at.Equal(old) {
		t.Errorf("reopened store dates its snapshot %v, want %v", at, old)
	}
}
