// Package fsmtest is test support for code that drives the registry's FSM:
// log entry builders, an FSM that logs to the test, a snapshot round trip
// and a Replica that applies proposals without Raft. It is an ordinary
// package, as hashicorp/raft's testing.go is, so that the tests of fsm,
// beatcheck, rpc and node share one copy; production code must not import
// it.
package fsmtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
)

// Log returns a command log entry at index holding data, in term 1.
func Log(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// MakeLog encodes msg as the command the fsm's table declares for it, in a
// log entry at index. It fails the test if msg is not a command.
func MakeLog(t testing.TB, index uint64, msg proto.Message) *raft.Log {
	t.Helper()
	typ, ok := fsm.TypeOf(msg)
	if !ok {
		t.Fatalf("fsmtest: %T is not a command", msg)
	}
	data, err := fsm.Encode(typ, msg)
	if err != nil {
		t.Fatalf("fsmtest: Encode(%v): %v", typ, err)
	}
	return Log(index, data)
}

// Apply applies msg to f at index and returns the response.
func Apply(t testing.TB, f *fsm.FSM, index uint64, msg proto.Message) any {
	t.Helper()
	return f.Apply(MakeLog(t, index, msg))
}

// New returns an FSM configured by cfg that logs to the test's output.
func New(t testing.TB, cfg fsm.Config) *fsm.FSM {
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return fsm.New(cfg)
}

// Persist returns the bytes of f's snapshot, checking that the sink was
// closed and not cancelled.
func Persist(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("fsmtest: Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &MemSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("fsmtest: Persist: %v", err)
	}
	if !sink.Closed || sink.Cancelled {
		t.Fatalf("fsmtest: after Persist: sink closed=%v cancelled=%v, want closed only", sink.Closed, sink.Cancelled)
	}
	return sink.Bytes()
}

// SnapshotRestore persists f's snapshot to memory, restores it into a new
// FSM and checks that the hashes match; it returns the new FSM.
func SnapshotRestore(t testing.TB, f *fsm.FSM) *fsm.FSM {
	t.Helper()
	data := Persist(t, f)
	g := New(t, fsm.DefaultConfig())
	if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("fsmtest: Restore: %v", err)
	}
	if got, want := g.Hash(), f.Hash(); got != want {
		t.Fatalf("fsmtest: restored Hash() = %s, want %s", got, want)
	}
	return g
}

// MemSink is an in-memory raft.SnapshotSink.
type MemSink struct {
	bytes.Buffer
	// FailWrite makes every Write fail.
	FailWrite bool
	// Closed and Cancelled record the calls to Close and Cancel.
	Closed    bool
	Cancelled bool
}

var _ raft.SnapshotSink = (*MemSink)(nil)

// Write appends p, or fails if FailWrite is set.
func (s *MemSink) Write(p []byte) (int, error) {
	if s.FailWrite {
		return 0, errors.New("fsmtest: disk full")
	}
	return s.Buffer.Write(p)
}

// ID returns "mem".
func (s *MemSink) ID() string { return "mem" }

// Close records the call.
func (s *MemSink) Close() error { s.Closed = true; return nil }

// Cancel records the call.
func (s *MemSink) Cancel() error { s.Cancelled = true; return nil }

// Replica is a leader without Raft: it implements fsm.Proposer by applying
// each proposal to its FSM at the next index, in order, as Raft would, and
// returns a domain error in the response as the error, as the node does.
type Replica struct {
	FSM *fsm.FSM

	mu    sync.Mutex
	index uint64
}

var _ fsm.Proposer = (*Replica)(nil)

// NewReplica returns a Replica over a new FSM that logs to the test.
func NewReplica(t testing.TB) *Replica { return &Replica{FSM: New(t, fsm.Config{})} }

// Apply implements fsm.Proposer.
func (r *Replica) Apply(_ context.Context, e fsm.Entry) (any, error) {
	resp := r.ApplyData(e.Data())
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// ApplyData applies a log entry's data at the next index and returns the
// FSM's response.
func (r *Replica) ApplyData(data []byte) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	return r.FSM.Apply(Log(r.index, data))
}

// ApplyMsg applies msg at the next index and returns the FSM's response.
func (r *Replica) ApplyMsg(t testing.TB, msg proto.Message) any {
	t.Helper()
	return r.ApplyData(MakeLog(t, 0, msg).Data)
}
