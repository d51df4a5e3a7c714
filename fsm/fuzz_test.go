package fsm_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// The seed corpora live in testdata/fuzz/FuzzDecode and testdata/fuzz/FuzzApply:
// a valid encoding of each command type, naming the instances of fuzzBase,
// plus garbage.

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, msg, err := fsm.Decode(data)
		if err != nil || msg == nil {
			return
		}
		// A decoded command encodes again, to the same command.
		again, err := fsm.Encode(typ, msg)
		if err != nil {
			t.Fatalf("Encode(Decode(%x)): %v", data, err)
		}
		typ2, msg2, err := fsm.Decode(again)
		if err != nil || typ2 != typ || !proto.Equal(msg, msg2) {
			t.Fatalf("Decode(Encode(Decode(%x))) = %v, %v, %v; want %v, %v", data, typ2, msg2, err, typ, msg)
		}
	})
}

// fuzzBase returns an FSM with a HEALTHY and a SUSPECT instance and a node.
func fuzzBase(t *testing.T) *fsm.FSM {
	f := fsm.New(fsm.Config{HistorySize: 64})
	for i, msg := range []proto.Message{
		register("orders", "orders-1", 1, 100),
		register("orders", "orders-2", 2, 200),
		suspect(300, cond("orders", "orders-2", 2, 2)),
		nodeMeta("n1", "10.0.0.1:9000", "10.0.0.1:8000"),
	} {
		fsmtest.Apply(t, f, uint64(i+1), msg)
	}
	return f
}

func FuzzApply(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, err := fsm.Decode(data); err != nil {
			return // Apply panics on purpose; FuzzDecode covers Decode.
		}
		g := fuzzBase(t)
		// Twice: the second application meets the state the first left.
		for index := uint64(5); index <= 6; index++ {
			resp := g.Apply(fsmtest.Log(index, data))
			switch resp.(type) {
			case nil, error, *fsm.RegisterResult, *fsm.DeregisterResult, *fsm.BeatResult, *fsm.ConditionalResult, *fsm.NodeMetaResult,
				*fsm.ACLResult, *fsm.BeatSecretResult, *fsm.WriteBatchResult:
			default:
				t.Fatalf("Apply response %T", resp)
			}
			if got := g.AppliedIndex(); got != index {
				t.Fatalf("AppliedIndex() = %d, want %d", got, index)
			}
		}
		g.ListServices()
		if _, _, err := g.EventsAfter("", 4, 3); err != nil {
			t.Fatalf("EventsAfter: %v", err)
		}
		fsmtest.SnapshotRestore(t, g)
	})
}
