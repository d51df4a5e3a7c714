package rpc

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// blackHole accepts connections and never answers, like the address of a
// killed container that swallows packets.
func blackHole(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

func TestAForwardedBeatToALeaderThatDoesNotAnswerFailsWithinTheForwardTimeout(t *testing.T) {
	leader, err := grpc.NewClient(blackHole(t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	cl := &fakeCluster{conn: leader}
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: cl, State: &fakeState{changed: make(chan struct{})},
		ForwardTimeout: 100 * time.Millisecond})
	// The caller's deadline is shorter than the batcher's flush timeout
	// (10s): only the forward timeout can end the call before it.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = registryv1.NewRegistryClient(cc).Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "s", Id: "i"}}})
	if c := status.Code(err); c != codes.DeadlineExceeded && c != codes.Unavailable {
		t.Fatalf("Beat through a follower whose leader does not answer: %v, want DEADLINE_EXCEEDED or UNAVAILABLE", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the call waited for the caller's deadline instead of the forward timeout")
	}
}

// leadershipMoves is a cluster whose node is the leader for the first
// check of IsLeader only: leadership moves between the acceptance of a
// beat and the flush of its batch.
type leadershipMoves struct {
	fakeCluster
	checks atomic.Int32
}

func (c *leadershipMoves) IsLeader() bool { return c.checks.Add(1) == 1 }

func TestAForwardedBeatIsNotForwardedAgainWhenLeadershipMovesInTheBatcher(t *testing.T) {
	cl, ap := &leadershipMoves{}, &fakeApplier{}
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: ap, Cluster: cl, State: &fakeState{}})
	ctx := metadata.AppendToOutgoingContext(t.Context(), forwardedKey, "n3")
	_, err := registryv1.NewRegistryClient(cc).Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "a"}}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("forwarded Beat whose leader stepped down before the flush: got %v, want UNAVAILABLE", err)
	}
	if cl.checks.Load() < 2 {
		t.Fatalf("IsLeader was checked %d times; the test needs the flush to check it again", cl.checks.Load())
	}
	if cl.connCalls != 0 || len(ap.calls) != 0 {
		t.Errorf("the node dialled the leader %d times and proposed %d commands; want neither", cl.connCalls, len(ap.calls))
	}
}
