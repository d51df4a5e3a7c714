package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// populated returns an FSM with instances of two services in both states,
// metadata, and nodes.
func populated(t testing.TB) *fsm.FSM {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, register("web", "w2", 1, 100))
	fsmtest.Apply(t, f, 2, register("web", "w1", 3, 200))
	fsmtest.Apply(t, f, 3, &fsmpb.Register{Service: "api", Id: "a1", NowUnixNs: 300, TtlNs: -5})
	fsmtest.Apply(t, f, 4, suspect(400, cond("web", "w2", 1, 1)))
	fsmtest.Apply(t, f, 5, nodeMeta("n2", "b:1", ""))
	fsmtest.Apply(t, f, 6, nodeMeta("n1", "a:1", "a:2"))
	fsmtest.Apply(t, f, 7, beats(700, beat("web", "w1", 3)))
	return f
}

func TestSnapshotRestore(t *testing.T) {
	f := populated(t)
	g := fsmtest.SnapshotRestore(t, f)

	wantInstances, wantIndex := f.Instances()
	gotInstances, gotIndex := g.Instances()
	if diff := cmp.Diff(wantInstances, gotInstances); diff != "" || gotIndex != wantIndex {
		t.Errorf("restored Instances() index %d, want %d (-want +got):\n%s", gotIndex, wantIndex, diff)
	}
	if diff := cmp.Diff(f.Nodes(), g.Nodes()); diff != "" {
		t.Errorf("restored Nodes() (-want +got):\n%s", diff)
	}
	if got := g.AppliedIndex(); got != 7 {
		t.Errorf("restored AppliedIndex() = %d, want 7", got)
	}

	// The restored FSM carries on like the original.
	for _, h := range []*fsm.FSM{f, g} {
		fsmtest.Apply(t, h, 8, beats(800, beat("web", "w2", 1)))
	}
	if f.Hash() != g.Hash() {
		t.Error("Hash() differs after applying the same entry to the original and the restored FSM")
	}
}

func TestSnapshotFormat(t *testing.T) {
	f := populated(t)
	data := fsmtest.Persist(t, f)
	if again := fsmtest.Persist(t, f); !bytes.Equal(data, again) {
		t.Error("two snapshots of the same FSM differ")
	}
	sum := sha256.Sum256(data)
	if got, want := f.Hash(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Hash() = %s, want the SHA-256 of the snapshot stream %s", got, want)
	}

	// Decode the stream by hand: header, sorted instances, sorted nodes, end.
	r := bytes.NewReader(data)
	var header fsmpb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(r, &header); err != nil {
		t.Fatal(err)
	}
	wantHeader := &fsmpb.SnapshotHeader{Version: 3, Index: 7, InstanceCount: 3, NodeCount: 2}
	if !proto.Equal(&header, wantHeader) {
		t.Errorf("header = %v, want %v", &header, wantHeader)
	}
	var keys []string
	for range header.InstanceCount {
		var rec fsmpb.Instance
		if err := protodelim.UnmarshalFrom(r, &rec); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, fmt.Sprintf("%s/%s:%d", rec.Service, rec.Id, rec.State))
	}
	for range header.NodeCount {
		var rec fsmpb.NodeMeta
		if err := protodelim.UnmarshalFrom(r, &rec); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, rec.NodeId)
	}
	if diff := cmp.Diff([]string{"api/a1:1", "web/w1:1", "web/w2:2", "n1", "n2"}, keys); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes after the last record", r.Len())
	}
}

func TestSnapshotEmpty(t *testing.T) {
	g := fsmtest.SnapshotRestore(t, fsm.New(fsm.Config{}))
	if all, index := g.Instances(); all != nil || index != 0 {
		t.Errorf("restored empty FSM: %v at %d", all, index)
	}
}

func TestPersistCancelsOnError(t *testing.T) {
	snap, err := populated(t).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &fsmtest.MemSink{FailWrite: true}
	if err := snap.Persist(sink); err == nil {
		t.Error("Persist to a failing sink succeeded")
	}
	if !sink.Cancelled || sink.Closed {
		t.Errorf("sink cancelled=%v closed=%v, want cancelled only", sink.Cancelled, sink.Closed)
	}
}

// stream builds a snapshot stream from records.
func stream(t testing.TB, records ...proto.Message) []byte {
	var buf bytes.Buffer
	for _, r := range records {
		if _, err := protodelim.MarshalTo(&buf, r); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestRestoreFailureKeepsState(t *testing.T) {
	valid := fsmtest.Persist(t, populated(t))
	header := func(version uint32, instances, nodes uint64) *fsmpb.SnapshotHeader {
		return &fsmpb.SnapshotHeader{Version: version, Index: 50, InstanceCount: instances, NodeCount: nodes}
	}
	inst := func(id string, state int32) *fsmpb.Instance {
		return &fsmpb.Instance{Service: "s", Id: id, State: state}
	}
	node := nodeMeta("n1", "a:1", "")
	tests := map[string][]byte{
		"empty stream":             nil,
		"version 0":                stream(t, header(0, 0, 0)),
		"version 4":                stream(t, header(4, 0, 0)),
		"beat secret in version 2": stream(t, &fsmpb.SnapshotHeader{Version: 2, Index: 50, BeatSecret: []byte{1}}),
		"missing instance":         stream(t, header(1, 2, 0), inst("a", 1)),
		"missing node":             stream(t, header(1, 1, 1), inst("a", 1)),
		"extra instance":           stream(t, header(1, 1, 0), inst("a", 1), inst("b", 1)),
		"trailing byte":            append(stream(t, header(1, 1, 0), inst("a", 1)), 0),
		"duplicate instance":       stream(t, header(1, 2, 0), inst("a", 1), inst("a", 1)),
		"state 0":                  stream(t, header(1, 1, 0), inst("a", 0)),
		"state 3":                  stream(t, header(1, 1, 0), inst("a", 3)),
		"state 257":                stream(t, header(1, 1, 0), inst("a", 257)),
		"node without addresses":   stream(t, header(1, 0, 1), nodeMeta("n1", "", "")),
		"duplicate node":           stream(t, header(1, 0, 2), node, node),
		"huge count, no records":   stream(t, header(1, 1<<62, 0)),
		"huge record length":       append(stream(t, header(1, 1, 0)), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"garbage":                  []byte("not a snapshot at all"),
		"undecodable node record":  append(stream(t, header(1, 0, 1)), 0x02, 0x0a, 0x07),
	}
	for i := range len(valid) {
		tests[fmt.Sprintf("truncated at %d of %d", i, len(valid))] = valid[:i]
	}

	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			f := populated(t)
			hash := f.Hash()
			changed := f.Changed()
			if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
				t.Fatal("Restore succeeded")
			}
			if got := f.Hash(); got != hash {
				t.Error("a failed Restore changed the state")
			}
			if got := f.AppliedIndex(); got != 7 {
				t.Errorf("AppliedIndex() = %d after a failed Restore, want 7", got)
			}
			if isClosed(changed) {
				t.Error("a failed Restore closed Changed()")
			}
			if events, _, err := f.EventsAfter("", 0, 0); err != nil || len(events) != 4 {
				t.Errorf("history after a failed Restore: %d events, %v; want 4, nil", len(events), err)
			}
		})
	}

	// Control: the same stream, whole, restores.
	if err := fsm.New(fsm.Config{}).Restore(io.NopCloser(bytes.NewReader(valid))); err != nil {
		t.Errorf("Restore(valid) = %v", err)
	}
}

// Reads, watches and Persist run concurrently with Apply; run with -race.
func TestConcurrentAccess(t *testing.T) {
	const n = 2000
	f := fsmtest.New(t, fsm.Config{HistorySize: 64})
	var wg sync.WaitGroup
	errs := make(chan error, 16)

	// A watcher that must see the last index without a lost wake-up.
	wg.Go(func() {
		deadline := time.After(time.Minute)
		for {
			ch := f.Changed()
			if f.AppliedIndex() == n {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				errs <- fmt.Errorf("watcher: no wake-up after index %d", f.AppliedIndex())
				return
			}
		}
	})
	// Readers.
	for range 3 {
		wg.Go(func() {
			after := uint64(0)
			for f.AppliedIndex() < n {
				f.GetService("svc1", true)
				f.ListServices()
				f.Reset("")
				_, next, err := f.EventsAfter("svc2", after, 5)
				if errors.Is(err, fsm.ErrCompacted) {
					_, next = f.Reset("svc2")
				} else if err != nil {
					errs <- err
					return
				}
				after = next
			}
		})
	}

	var persists sync.WaitGroup
	for i := uint64(1); i <= n; i++ {
		svc := fmt.Sprint("svc", i%3)
		id := fmt.Sprint("i", i%50)
		var msg proto.Message
		switch i % 4 {
		case 0:
			msg = register(svc, id, 1, int64(i))
		case 1:
			msg = beats(int64(i), beat(svc, id, 1))
		case 2:
			msg = suspect(int64(i), cond(svc, id, 1, i-4))
		case 3:
			msg = expire(int64(i), cond(svc, id, 1, i-3))
		}
		fsmtest.Apply(t, f, i, msg)
		if i%250 == 0 {
			snap, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			persists.Go(func() {
				defer snap.Release()
				if err := snap.Persist(&fsmtest.MemSink{}); err != nil {
					errs <- err
				}
			})
		}
	}
	persists.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
