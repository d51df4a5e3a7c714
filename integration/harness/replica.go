package harness

import (
	"context"
	"fmt"
	"slices"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// readReplicaFlag makes registry-node join as a read replica (a Raft
// non-voter).
const readReplicaFlag = "--read-replica"

// AddReplica starts a read replica, n<k> on the next free port slot (see
// Options.Spare), with --join pointing at a running member (the last known
// leader if it runs) and --read-replica, and waits until it answers and
// every running node's configuration lists it with the role "replica" and
// its gRPC address published. Like AddNode, it is one of Nodes from then
// on (faults, workloads and Restart treat it like any node) and the
// cleanup stops it by pid. Without a spare slot left it returns an error
// wrapping ErrNoSpareSlot.
func (c *Cluster) AddReplica(ctx context.Context) (*Node, error) {
	n, via, err := c.join(ctx, "replica", readReplicaFlag)
	if err != nil {
		return nil, err
	}
	if err := c.WaitRole(ctx, n, "replica"); err != nil {
		return nil, fmt.Errorf("harness: %s joined through %s: %w", n.id, via.id, err)
	}
	c.logf("%s: joined through %s as a read replica", n.id, via.id)
	return n, nil
}

// StartedAsReplica reports whether n was started with --read-replica (by
// AddReplica); Promote and Demote do not change it.
func (n *Node) StartedAsReplica() bool { return slices.Contains(n.args, readReplicaFlag) }

// Voters returns the running nodes not started as read replicas.
func (c *Cluster) Voters() []*Node {
	return c.nodesWhere(func(n *Node) bool { return n.Running() && !n.StartedAsReplica() })
}

// WaitRole waits until every running node's configuration lists n with
// role ("voter" or "replica") and n's gRPC address, for at most
// Options.LeaderTimeout plus Options.ApplyTimeout unless ctx ends sooner.
func (c *Cluster) WaitRole(ctx context.Context, n *Node, role string) error {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.LeaderTimeout+c.opts.ApplyTimeout)
	defer cancel()
	return poll.Until(ctx, func(ctx context.Context) error {
		for _, m := range c.Running() {
			st, err := m.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			i := slices.IndexFunc(st.GetMembers(), func(mb *registryv1.Member) bool { return mb.GetId() == n.id })
			if i < 0 {
				return fmt.Errorf("%s's configuration does not list %s yet: %s", m.id, n.id, describeMembers(st.GetMembers()))
			}
			if mb := st.GetMembers()[i]; mb.GetRole() != role || mb.GetGrpcAddress() != n.grpcAddr {
				return fmt.Errorf("%s lists %s as %q at gRPC %q, want %q at %s",
					m.id, n.id, mb.GetRole(), mb.GetGrpcAddress(), role, n.grpcAddr)
			}
		}
		return nil
	})
}
