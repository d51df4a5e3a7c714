package node

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/rpc"
)

// RestoreSnapshot implements rpc.Cluster with hashicorp/raft's user restore,
// as Consul's snapshot restore does: the leader decodes and checks the whole
// backup first (fsm.PrepareRestore, which also keeps this cluster's node
// records), then raft installs it in a snapshot of its own at an index past
// its log, restores the fsm from it and sends it to the followers. The fsm's
// OnRestore hook makes the checker grant its failover grace again.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) (fsm.SnapshotInfo, error) {
	if !n.IsLeader() {
		return fsm.SnapshotInfo{}, rpc.ErrNotLeader
	}
	// raft installs the restore at max(LastIndex(), meta.Index) + 1: that
	// is last + 1 unless entries were appended in between, and the fsm
	// never lets its index go back (fsm.Restore).
	last := n.raft.LastIndex()
	var prepared bytes.Buffer
	info, err := n.fsm.PrepareRestore(r, last+1, &prepared)
	if err != nil {
		return fsm.SnapshotInfo{}, err
	}
	n.log.Warn("restoring a backup", "instances", info.Instances, "bytes", prepared.Len())
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: last, Size: int64(prepared.Len())}
	if err := n.raft.Restore(meta, &prepared, timeoutOf(ctx)); err != nil {
		n.log.Error("restore failed", "error", err)
		return fsm.SnapshotInfo{}, err
	}
	info.Index = n.fsm.AppliedIndex()
	n.log.Warn("restored a backup", "instances", info.Instances, "index", info.Index)
	return info, nil
}

// snapshotStore wraps raft's snapshot store to note the last snapshot
// written (taken, installed from the leader or restored): its index, term
// and time. The metrics read them at scrape time without asking Raft.
type snapshotStore struct {
	raft.SnapshotStore
	last atomic.Pointer[snapshotMark] // nil while there is none
}

// snapshotMark is the last snapshot written. At is zero when unknown.
type snapshotMark struct {
	Index, Term uint64
	At          time.Time
}

// newSnapshotStore wraps store. dir is the file store's base directory, or
// "" in memory: the time of a snapshot written before the node started is
// its directory's modification time.
func newSnapshotStore(store raft.SnapshotStore, dir string) *snapshotStore {
	s := &snapshotStore{SnapshotStore: store}
	metas, err := store.List()
	if err != nil || len(metas) == 0 {
		return s
	}
	mark := &snapshotMark{Index: metas[0].Index, Term: metas[0].Term}
	if dir != "" {
		if fi, err := os.Stat(filepath.Join(dir, "snapshots", metas[0].ID)); err == nil {
			mark.At = fi.ModTime()
		}
	}
	s.last.Store(mark)
	return s
}

// lastSnapshot is the last snapshot written, and false when there is none.
func (s *snapshotStore) lastSnapshot() (snapshotMark, bool) {
	if s == nil {
		return snapshotMark{}, false
	}
	if m := s.last.Load(); m != nil {
		return *m, true
	}
	return snapshotMark{}, false
}

// Create implements raft.SnapshotStore.
func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &trackedSink{SnapshotSink: sink, store: s, index: index, term: term}, nil
}

type trackedSink struct {
	raft.SnapshotSink
	store       *snapshotStore
	index, term uint64
}

// Close implements raft.SnapshotSink: a snapshot is written once its sink
// closed without error.
func (k *trackedSink) Close() error {
	if err := k.SnapshotSink.Close(); err != nil {
		return err
	}
	k.store.last.Store(&snapshotMark{Index: k.index, Term: k.term, At: time.Now()})
	return nil
}
