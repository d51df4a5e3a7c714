package rpc

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

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

// electedLater is a follower that knows no leader until elected is set,
// then the leader.
type electedLater struct {
	fakeCluster
	elected atomic.Bool
}

func (c *electedLater) IsLeader() bool { return c.elected.Load() }

func TestABeatStreamSurvivesAFrameTheNodeCouldNotForward(t *testing.T) {
	cl := &electedLater{}
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: encodingApplier{}, Cluster: cl, State: &fakeState{}})
	st, err := registryv1.NewRegistryClient(cc).BeatStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	beats := []*registryv1.InstanceRef{{Service: "orders", Id: "a", Incarnation: 1}}
	// No leader is known: the frame cannot be forwarded.
	if err := st.Send(&registryv1.BeatRequest{Beats: beats, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("the stream ended on a frame the node could not forward: %v", err)
	}
	want := &registryv1.BeatResponse{Seq: 1, Retry: &registryv1.BeatRetry{
		Message: ErrNoLeader.Error(),
		Outcome: &registryv1.WriteOutcome{Proposed: false},
		Leader:  &registryv1.LeaderHint{LeaderId: "n1", LeaderGrpcAddress: "10.1.1.1:7001", LeaderHttpAddress: "10.1.1.1:7201"},
	}}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("answer to the frame (-want +got):\n%s", diff)
	}
	// The node becomes the leader: the resent frame commits on the same
	// stream.
	cl.elected.Store(true)
	if err := st.Send(&registryv1.BeatRequest{Beats: beats, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	resp, err = st.Recv()
	if err != nil {
		t.Fatalf("resent frame: %v", err)
	}
	if resp.Seq != 2 || resp.Retry != nil || resp.Index != 7 {
		t.Errorf("resent frame answered %v; want seq 2 committed at index 7", resp)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want io.EOF", err)
	}
}
