package node_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/node/nodetest"
)

func TestRemovingANodeThatIsNotAMemberIsNotFound(t *testing.T) {
	c := nodetest.New(t, 3, nil)
	leader := c.Leader()
	for _, i := range []int{leader, (leader + 1) % 3} { // on the leader, and forwarded by a follower
		_, err := registryv1.NewClusterClient(c.Conns[i]).Remove(t.Context(), &registryv1.RemoveRequest{NodeId: "n9"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Remove of n9 through node %d: %v, want NOT_FOUND", i, err)
		}
	}
	st, err := registryv1.NewClusterClient(c.Conns[leader]).Status(t.Context(), &registryv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 3 {
		t.Errorf("%d members after removing a node that is not one, want 3", len(st.Members))
	}
}
