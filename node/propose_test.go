package node_test

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

func TestProposeOnAFollowerIsLeadershipLost(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx := t.Context()

	_, err := fsm.Propose[*fsm.NodeMetaResult](ctx, c.Nodes[follower], &fsmpb.NodeMeta{NodeId: "x"})
	if !errors.Is(err, fsm.ErrLeadershipLost) || !errors.Is(err, raft.ErrNotLeader) {
		t.Errorf("Propose on a follower: error = %v, want one wrapping fsm.ErrLeadershipLost and raft.ErrNotLeader", err)
	}

	res, err := fsm.Propose[*fsm.NodeMetaResult](ctx, c.Nodes[leader], &fsmpb.NodeMeta{NodeId: "x", GrpcAddress: "127.0.0.1:1"})
	if err != nil || res.Index == 0 {
		t.Fatalf("Propose on the leader = %+v, %v; want an index", res, err)
	}
	if got, ok := c.Nodes[leader].FSM().Node("x"); !ok || got.GRPCAddress != "127.0.0.1:1" {
		t.Errorf("after Propose the leader's FSM has node x = %+v, %v", got, ok)
	}

	// The zero Entry would make every replica fail-stop (a panic here): it
	// is refused before Raft.
	if _, err := c.Nodes[leader].Apply(ctx, fsm.Entry{}); err == nil {
		t.Error("Apply(fsm.Entry{}) succeeded; want an error")
	}
}
