package fsm

import (
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// The seed corpora live in testdata/fuzz/FuzzDecode and testdata/fuzz/FuzzApply:
// a valid encoding of each command type, naming the instances of fuzzBase,
// plus garbage.

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, msg, err := Decode(data)
		if err != nil || msg == nil {
			return
		}
		// A decoded command encodes again, to the same command.
		again, err := Encode(typ, msg)
		if err != nil {
			t.Fatalf("Encode(Decode(%x)): %v", data, err)
		}
		typ2, msg2, err := Decode(again)
		if err != nil || typ2 != typ || !proto.Equal(msg, msg2) {
			t.Fatalf("Decode(Encode(Decode(%x))) = %v, %v, %v; want %v, %v", data, typ2, msg2, err, typ, msg)
		}
	})
}

// fuzzBase returns an FSM with a HEALTHY and a SUSPECT instance and a node.
func fuzzBase(t *testing.T) *FSM {
	f := New(Config{HistorySize: 64})
	for i, msg := range []proto.Message{
		register("orders", "orders-1", 1, 100),
		register("orders", "orders-2", 2, 200),
		suspect(300, cond("orders", "orders-2", 2, 2)),
		nodeMeta("n1", "10.0.0.1:9000", "10.0.0.1:8000"),
	} {
		apply(t, f, uint64(i+1), msg)
	}
	return f
}

func FuzzApply(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, err := Decode(data); err != nil {
			return // Apply panics on purpose; FuzzDecode covers Decode.
		}
		fsm := fuzzBase(t)
		// Twice: the second application meets the state the first left.
		for index := uint64(5); index <= 6; index++ {
			resp := fsm.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
			switch resp.(type) {
			case nil, error, *RegisterResult, *DeregisterResult, *BeatResult, *ConditionalResult, *NodeMetaResult:
			default:
				t.Fatalf("Apply response %T", resp)
			}
			if got := fsm.AppliedIndex(); got != index {
				t.Fatalf("AppliedIndex() = %d, want %d", got, index)
			}
		}
		fsm.ListServices()
		if _, _, err := fsm.EventsAfter("", 4, 3); err != nil {
			t.Fatalf("EventsAfter: %v", err)
		}
		SnapshotRestore(t, fsm)
	})
}
