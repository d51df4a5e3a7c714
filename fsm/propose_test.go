package fsm_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// recorder is a Replica that keeps the entries proposed to it.
type recorder struct {
	*fsmtest.Replica
	entries []fsm.Entry
}

func (r *recorder) Apply(ctx context.Context, e fsm.Entry) (any, error) {
	r.entries = append(r.entries, e)
	return r.Replica.Apply(ctx, e)
}

func TestPropose(t *testing.T) {
	ctx := t.Context()
	r := &recorder{Replica: fsmtest.NewReplica(t)}

	res, err := fsm.Propose[*fsm.RegisterResult](ctx, r, register("orders", "orders-1", 2, 100))
	if err != nil || res.Index != 1 || !res.Created {
		t.Fatalf("Propose(Register) = %+v, %v; want a creation at index 1", res, err)
	}
	if e := r.entries[0]; e.Type() != fsm.RegisterType || e.Data()[0] != byte(fsm.RegisterType) {
		t.Errorf("proposed entry type %v, data[0] %d; want %v", e.Type(), e.Data()[0], fsm.RegisterType)
	}

	// A domain error comes back as the error.
	if _, err := fsm.Propose[*fsm.RegisterResult](ctx, r, register("orders", "orders-1", 1, 100)); !errors.Is(err, fsm.ErrFenced) {
		t.Errorf("Propose(lower incarnation) error = %v, want ErrFenced", err)
	}

	res2, err := fsm.Propose[*fsm.ConditionalResult](ctx, r, expire(200, cond("orders", "orders-1", 2, 1)))
	if err != nil || res2.Applied != 1 {
		t.Errorf("Propose(Expire) = %+v, %v; want 1 applied", res2, err)
	}
}

func TestProposeRefusesBeforeProposing(t *testing.T) {
	tests := []struct {
		name    string
		propose func(ctx context.Context, p fsm.Proposer) error
	}{
		{"wrong response type", func(ctx context.Context, p fsm.Proposer) error {
			_, err := fsm.Propose[*fsm.DeregisterResult](ctx, p, register("a", "b", 1, 1))
			return err
		}},
		{"response by value", func(ctx context.Context, p fsm.Proposer) error {
			_, err := fsm.Propose[fsm.RegisterResult](ctx, p, register("a", "b", 1, 1))
			return err
		}},
		{"not a command", func(ctx context.Context, p fsm.Proposer) error {
			_, err := fsm.Propose[*fsm.NodeMetaResult](ctx, p, &fsmpb.SnapshotHeader{})
			return err
		}},
		{"nil message", func(ctx context.Context, p fsm.Proposer) error {
			_, err := fsm.Propose[*fsm.NodeMetaResult](ctx, p, proto.Message(nil))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{Replica: fsmtest.NewReplica(t)}
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

func (lyingProposer) Apply(context.Context, fsm.Entry) (any, error) {
	return &fsm.NodeMetaResult{}, nil
}

func TestProposeChecksTheResponse(t *testing.T) {
	if _, err := fsm.Propose[*fsm.BeatResult](t.Context(), lyingProposer{}, beats(1, beat("a", "b", 1))); err == nil {
		t.Error("Propose accepted a *NodeMetaResult for a BeatBatch")
	}
}
