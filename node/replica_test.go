package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// roleOf waits until node i's view of the configuration lists id with the
// role want ("voter" or "replica").
func (c *cluster) waitRole(t *testing.T, i int, id, want string) {
	t.Helper()
	poll.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		st, err := registryv1.NewClusterClient(c.Conns[i]).Status(ctx, &registryv1.StatusRequest{})
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Id == id {
				if m.Role != want || m.Voter != (want == "voter") {
					return fmt.Errorf("%s is a member with role %q (voter %v), want %q", id, m.Role, m.Voter, want)
				}
				return nil
			}
		}
		return fmt.Errorf("%s is not a member yet", id)
	})
}

// A node started as a read replica joins as a Raft non-voter: it never
// leads, serves STALE reads and forwards writes, cannot be handed
// leadership, and is promoted to a voter and demoted back; demoting the
// leader, or a voter of only three, is refused.
func TestAReadReplicaJoinsAsANonVoterAndChangesRole(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	r := c.StartReplica(leader, nil)
	rid := c.Nodes[r].ID()
	c.waitRole(t, leader, rid, "replica")
	cl := registryv1.NewClusterClient(c.Conns[(leader+1)%3]) // calls forwarded by a follower

	in := &registryv1.Instance{Service: "orders", Id: "o1", Address: "127.0.0.5:8080", Incarnation: 1,
		BeatInterval: durationpb.New(time.Second), SuspectAfter: durationpb.New(3 * time.Second), Ttl: durationpb.New(10 * time.Second)}
	// The replica forwards to the leader once the leader's address record
	// has reached it (until then: UNAVAILABLE, retryable).
	poll.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		_, err := c.registry(r).Register(ctx, &registryv1.RegisterRequest{Instance: in})
		if err != nil {
			return fmt.Errorf("Register through the replica: %w", err)
		}
		return nil
	})
	poll.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		got, err := c.registry(r).GetService(ctx, &registryv1.GetServiceRequest{Service: "orders", Consistency: registryv1.Consistency_CONSISTENCY_STALE})
		if err != nil {
			return err
		}
		if len(got.Instances) != 1 {
			return fmt.Errorf("the replica holds %d instances of orders, want 1", len(got.Instances))
		}
		return nil
	})
	if c.Nodes[r].IsLeader() {
		t.Fatal("the replica leads")
	}

	refused := []struct {
		what string
		call func() error
	}{
		{"transfer leadership to the replica", func() error {
			_, err := cl.TransferLeadership(t.Context(), &registryv1.TransferLeadershipRequest{NodeId: rid})
			return err
		}},
		{"demote the leader", func() error {
			_, err := cl.Demote(t.Context(), &registryv1.DemoteRequest{NodeId: c.Nodes[leader].ID()})
			return err
		}},
		{"demote a voter of three", func() error {
			_, err := cl.Demote(t.Context(), &registryv1.DemoteRequest{NodeId: c.Nodes[(leader+1)%3].ID()})
			return err
		}},
	}
	for _, tc := range refused {
		if err := tc.call(); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: %v, want FAILED_PRECONDITION", tc.what, err)
		}
	}
	if _, err := cl.Promote(t.Context(), &registryv1.PromoteRequest{NodeId: "n9"}); status.Code(err) != codes.NotFound {
		t.Errorf("Promote n9: %v, want NOT_FOUND", err)
	}

	if _, err := cl.Promote(t.Context(), &registryv1.PromoteRequest{NodeId: rid}); err != nil {
		t.Fatalf("Promote %s: %v", rid, err)
	}
	c.waitRole(t, r, rid, "voter")
	if _, err := cl.Demote(t.Context(), &registryv1.DemoteRequest{NodeId: rid}); err != nil {
		t.Fatalf("Demote %s: %v", rid, err)
	}
	c.waitRole(t, r, rid, "replica")
	c.waitRole(t, leader, c.Nodes[leader].ID(), "voter")

	// Joining again as a voter (a restart without --read-replica) leaves
	// a replica a replica.
	if _, err := cl.Join(t.Context(), &registryv1.JoinRequest{NodeId: rid, RaftAddress: c.Nodes[r].RaftAddr()}); err != nil {
		t.Fatalf("Join %s as a voter: %v", rid, err)
	}
	c.waitRole(t, leader, rid, "replica")
}
