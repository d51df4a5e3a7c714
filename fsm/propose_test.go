package fsm

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// replica applies each proposal to an FSM at the next index, as Raft would.
type replica struct {
	f       *FSM
	index   uint64
	entries []Entry
}

func (r *replica) Apply(_ context.Context, e Entry) (any, error) {
	r.entries = append(r.entries, e)
	r.index++
	resp := r.f.Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: e.Data()})
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

func TestPropose(t *testing.T) {
	ctx := t.Context()
	r := &replica{f: newTestFSM(t, DefaultConfig())}

	res, err := Propose[*RegisterResult](ctx, r, register("orders", "orders-1", 2, 100))
	if err != nil || res.Index != 1 || !res.Created {
		t.Fatalf("Propose(Register) = %+v, %v; want a creation at index 1", res, err)
	}
	if e := r.entries[0]; e.Type() != RegisterType || e.Data()[0] != byte(RegisterType) {
		t.Errorf("proposed entry type %v, data[0] %d; want %v", e.Type(), e.Data()[0], RegisterType)
	}

	// A domain error comes back as the error.
	if _, err := Propose[*RegisterResult](ctx, r, register("orders", "orders-1", 1, 100)); !errors.Is(err, ErrFenced) {
		t.Errorf("Propose(lower incarnation) error = %v, want ErrFenced", err)
	}

	res2, err := Propose[*ConditionalResult](ctx, r, expire(200, cond("orders", "orders-1", 2, 1)))
	if err != nil || res2.Applied != 1 {
		t.Errorf("Propose(Expire) = %+v, %v; want 1 applied", res2, err)
	}
}

func TestProposeRefusesBeforeProposing(t *testing.T) {
	tests := []struct {
		name    string
		propose func(ctx context.Context, p Proposer) error
	}{
		{"wrong response type", func(ctx context.Context, p Proposer) error {
			_, err := Propose[*DeregisterResult](ctx, p, register("a", "b", 1, 1))
			return err
		}},
		{"response by value", func(ctx context.Context, p Proposer) error {
			_, err := Propose[RegisterResult](ctx, p, register("a", "b", 1, 1))
			return err
		}},
		{"not a command", func(ctx context.Context, p Proposer) error {
			_, err := Propose[*NodeMetaResult](ctx, p, &fsmpb.SnapshotHeader{})
			return err
		}},
		{"nil message", func(ctx context.Context, p Proposer) error {
			_, err := Propose[*NodeMetaResult](ctx, p, proto.Message(nil))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &replica{f: newTestFSM(t, DefaultConfig())}
			if err := tt.propose(t.Context(), r); err == nil {
				t.Error("Propose succeeded; want an error")
			}
			if len(r.entries) != 0 {
				t.Errorf("%d entries proposed; want none", len(r.entries))
			}
		})
	}
}

// lyingProposer answers every proposal with the wrong response.
type lyingProposer struct{}

func (lyingProposer) Apply(context.Context, Entry) (any, error) { return &NodeMetaResult{}, nil }

func TestProposeChecksTheResponse(t *testing.T) {
	if _, err := Propose[*BeatResult](t.Context(), lyingProposer{}, beats(1, beat("a", "b", 1))); err == nil {
		t.Error("Propose accepted a *NodeMetaResult for a BeatBatch")
	}
}
