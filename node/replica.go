package node

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/rpc"
)

// Read replicas are hashicorp/raft non-voters: the leader replicates its
// log (or a snapshot) to them like to any follower, but they neither vote
// nor stand for election, and a commit never waits for them. A node
// started with Config.ReadReplica asks to join as one (publishOnce); the
// leader adds it with AddNonvoter. Promote and Demote change a member's
// suffrage through Raft's own configuration changes.

// AddNonvoter implements rpc.Admin. A member is left as it is, voter or
// not: a replica that was promoted stays a voter when it joins again.
func (n *Node) AddNonvoter(ctx context.Context, id, raftAddr string) (uint64, error) {
	conf, index, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == id && string(srv.Address) == raftAddr {
			return index, nil
		}
	}
	f := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, err
	}
	n.log.Info("added read replica", "peer_id", id, "raft_addr", raftAddr, "index", f.Index())
	return f.Index(), nil
}

// Promote implements rpc.Admin: a non-voter becomes a voter at its
// address; a voter is left as it is.
func (n *Node) Promote(ctx context.Context, id string) (uint64, error) {
	conf, index, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	srv, ok := findServer(conf, id)
	if !ok {
		return 0, fmt.Errorf("%w: %q", rpc.ErrNotMember, id)
	}
	if srv.Suffrage == raft.Voter {
		return index, nil
	}
	f := n.raft.AddVoter(srv.ID, srv.Address, 0, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, err
	}
	n.log.Info("promoted read replica to voter", "peer_id", id, "index", f.Index())
	return f.Index(), nil
}

// Demote implements rpc.Admin: a voter becomes a non-voter, unless
// checkDemote refuses it; a non-voter is left as it is.
func (n *Node) Demote(ctx context.Context, id string) (uint64, error) {
	conf, index, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	change, err := checkDemote(conf, id, n.cfg.NodeID)
	if err != nil || !change {
		return index, err
	}
	f := n.raft.DemoteVoter(raft.ServerID(id), 0, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, err
	}
	n.log.Info("demoted voter to read replica", "peer_id", id, "index", f.Index())
	return f.Index(), nil
}

// checkDemote decides whether the leader may demote id in conf: not a
// member is rpc.ErrNotMember; a non-voter needs no change; the leader
// itself, and a voter whose demotion leaves fewer than
// rpc.MinVotersAfterDemote voters, are rpc.ErrMembershipRefused.
func checkDemote(conf raft.Configuration, id, leader string) (change bool, err error) {
	srv, ok := findServer(conf, id)
	switch {
	case !ok:
		return false, fmt.Errorf("%w: %q", rpc.ErrNotMember, id)
	case srv.Suffrage != raft.Voter:
		return false, nil
	case id == leader:
		return false, fmt.Errorf("%w: %q leads the cluster; transfer leadership first (registryctl cluster transfer-leader)", rpc.ErrMembershipRefused, id)
	}
	voters := 0
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters-1 < rpc.MinVotersAfterDemote {
		return false, fmt.Errorf("%w: demoting %q would leave %d voters; at least %d keep a quorum through the loss of one (promote or add a voter first)",
			rpc.ErrMembershipRefused, id, voters-1, rpc.MinVotersAfterDemote)
	}
	return true, nil
}

// findServer returns id's entry in conf.
func findServer(conf raft.Configuration, id string) (raft.Server, bool) {
	for _, srv := range conf.Servers {
		if string(srv.ID) == id {
			return srv, true
		}
	}
	return raft.Server{}, false
}
