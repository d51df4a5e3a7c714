package rpc

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/internal/poll"
)

// countingFollower is a follower whose leader is conn; it counts IsLeader
// calls (each write handler asks once, and each flush).
type countingFollower struct {
	fakeCluster
	asked atomic.Int64
}

func (c *countingFollower) IsLeader() bool {
	c.asked.Add(1)
	return false
}

// Writes that reach a follower together go to the leader in one
// ForwardWrites call, and each caller gets its own answer: the fenced
// registration fails with FailedPrecondition, the absent deregistration
// with NotFound, their neighbours succeed with their beat keys.
func TestAFollowerForwardsConcurrentWritesInOneCallAndEachGetsItsOwnAnswer(t *testing.T) {
	rep := newRecordingReplica(t)
	rep.ApplyMsg(t, regCmd("orders", "fenced", 5)) // index 1
	rep.gate = make(chan struct{})
	_, leader := newTestConn(t, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: &fakeState{}})
	reg := prometheus.NewRegistry()
	cl := &countingFollower{fakeCluster: fakeCluster{conn: leader}}
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: cl, State: &fakeState{},
		Metrics: NewMetrics(reg), ForwardTimeout: 30 * time.Second,
		// One forward in flight: whatever arrives meanwhile waits for the next.
		Writes: groupcommit.Config{Window: time.Millisecond, MaxInflight: 1}})
	client := registryv1.NewRegistryClient(cc)
	ctx := t.Context()

	// A lone write is forwarded at once, and holds the follower's flush
	// while the leader's commit waits on the gate.
	first := make(chan error, 1)
	go func() {
		_, err := client.Register(ctx, regRequest("orders", "first", 1))
		first <- err
	}()
	select {
	case <-rep.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the lone registration did not reach the leader")
	}
	wait := sendMixedWrites(ctx, client)
	// Five handlers and the first flush have asked IsLeader.
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		if n := cl.asked.Load(); n < 6 {
			return errors.New("not every write has reached the follower's group commit")
		}
		return nil
	})
	close(rep.gate)
	answers := wait()
	if err := <-first; err != nil {
		t.Fatalf("first Register: %v", err)
	}

	if got := forwardedCount(t, reg, registryv1.Registry_ForwardWrites_FullMethodName); got != 2 {
		t.Errorf("the follower made %v ForwardWrites calls, want 2 (the lone write, then the four together)", got)
	}
	if got := forwardedCount(t, reg, registryv1.Registry_Register_FullMethodName); got != 0 {
		t.Errorf("the follower forwarded %v Register calls one by one, want 0", got)
	}
	for _, name := range []string{"good", "good2"} {
		a := answers[name]
		if a.err != nil {
			t.Errorf("%s: %v, want success beside the fenced one", name, a.err)
			continue
		}
		if a.reg.Instance.GetId() != name || a.reg.Index < 3 || len(a.reg.BeatKey) == 0 {
			t.Errorf("%s: answer %v, want its own instance at index >= 3 with a beat key", name, a.reg)
		}
	}
	if code := status.Code(answers["fenced"].err); code != codes.FailedPrecondition {
		t.Errorf("fenced: %v, want FailedPrecondition", answers["fenced"].err)
	}
	if code := status.Code(answers["absent"].err); code != codes.NotFound {
		t.Errorf("absent: %v, want NotFound", answers["absent"].err)
	}
	if in, ok := rep.FSM.Instance("orders", "good"); !ok || in.Incarnation != 1 {
		t.Errorf("orders/good on the leader: %+v, %v; want it registered", in, ok)
	}
}

// The leader validates every forwarded write again and answers each on
// its own: an invalid write fails alone, in its place.
func TestTheLeaderAnswersEachForwardedWriteInItsPlace(t *testing.T) {
	rep := fsmtest.NewReplica(t)
	s, _ := newTestConn(t, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM})
	resp, err := s.ForwardWrites(t.Context(), &registryv1.ForwardWritesRequest{Writes: []*registryv1.ForwardedWrite{
		{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", "a", 1)}},
		{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", "bad id!", 1)}},
		{Op: &registryv1.ForwardedWrite_Deregister{Deregister: &registryv1.DeregisterRequest{Service: "orders", Id: "a"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 3 {
		t.Fatalf("%d results for 3 writes", len(resp.Results))
	}
	if r := resp.Results[0].GetRegister(); r.GetInstance().GetId() != "a" {
		t.Errorf("write 0: %v, want orders/a registered", resp.Results[0])
	}
	if e := resp.Results[1].GetError(); codes.Code(e.GetCode()) != codes.InvalidArgument {
		t.Errorf("write 1: %v, want INVALID_ARGUMENT", resp.Results[1])
	}
	if d := resp.Results[2].GetDeregister(); d == nil || d.Index == 0 {
		t.Errorf("write 2: %v, want orders/a deregistered", resp.Results[2])
	}
}

// With ACLs on, each forwarded write needs service write on its own
// service under the call's token: the one the token may not write fails
// with PERMISSION_DENIED, its neighbour commits.
func TestTheLeaderAuthorizesEachForwardedWriteOnItsOwn(t *testing.T) {
	rep := fsmtest.NewReplica(t)
	secret := acl.NewSecret()
	for _, msg := range []proto.Message{
		&fsmpb.ACLBootstrap{AccessorId: "mgmt", SecretHash: acl.HashSecret(acl.NewSecret())},
		&fsmpb.ACLPolicySet{Name: "orders", Rules: `service "orders" { policy = "write" }`},
		&fsmpb.ACLTokenSet{AccessorId: "orders", SecretHash: acl.HashSecret(secret), Policies: []string{"orders"}},
	} {
		if err, ok := rep.ApplyMsg(t, msg).(error); ok {
			t.Fatal(err)
		}
	}
	s, _ := newTestConn(t, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM})
	req := &registryv1.ForwardWritesRequest{Writes: []*registryv1.ForwardedWrite{
		{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("payments", "p", 1)}},
		{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", "o", 1)}},
	}}
	ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+string(secret), forwardedKey, "n2"))
	got, err := s.UnaryInterceptor()(ctx, req, &grpc.UnaryServerInfo{FullMethod: registryv1.Registry_ForwardWrites_FullMethodName},
		func(ctx context.Context, req any) (any, error) {
			return s.ForwardWrites(ctx, req.(*registryv1.ForwardWritesRequest))
		})
	if err != nil {
		t.Fatalf("ForwardWrites under the orders token: %v, want per-write answers", err)
	}
	resp := got.(*registryv1.ForwardWritesResponse)
	if e := resp.Results[0].GetError(); codes.Code(e.GetCode()) != codes.PermissionDenied {
		t.Errorf("payments/p: %v, want PERMISSION_DENIED", resp.Results[0])
	}
	if r := resp.Results[1].GetRegister(); r.GetInstance().GetId() != "o" {
		t.Errorf("orders/o: %v, want it registered", resp.Results[1])
	}
	if _, ok := rep.FSM.Instance("payments", "p"); ok {
		t.Error("payments/p is registered by a token without write on payments")
	}

	// Without a token the call is refused as a whole.
	_, err = s.UnaryInterceptor()(metadata.NewIncomingContext(t.Context(), metadata.Pairs(forwardedKey, "n2")), req,
		&grpc.UnaryServerInfo{FullMethod: registryv1.Registry_ForwardWrites_FullMethodName},
		func(ctx context.Context, req any) (any, error) {
			return s.ForwardWrites(ctx, req.(*registryv1.ForwardWritesRequest))
		})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ForwardWrites without a token: %v, want UNAUTHENTICATED", err)
	}
}

// A write forwarded to a node is never forwarded again: a node that is no
// longer the leader when the batch is flushed refuses it, and a
// ForwardWrites call reaching a follower is refused, neither dialling on.
func TestAForwardedWriteIsNeverForwardedAgain(t *testing.T) {
	cl, ap := &leadershipMoves{}, &fakeApplier{}
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: ap, Cluster: cl, State: &fakeState{}})
	ctx := metadata.AppendToOutgoingContext(t.Context(), forwardedKey, "n3")
	_, err := registryv1.NewRegistryClient(cc).Register(ctx, regRequest("orders", "a", 1))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("forwarded Register whose leader stepped down before the flush: got %v, want UNAVAILABLE", err)
	}
	if cl.checks.Load() < 2 {
		t.Fatalf("IsLeader was checked %d times; the test needs the flush to check it again", cl.checks.Load())
	}
	_, err = registryv1.NewRegistryClient(cc).ForwardWrites(ctx, &registryv1.ForwardWritesRequest{Writes: []*registryv1.ForwardedWrite{
		{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", "b", 1)}},
	}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ForwardWrites to a follower: got %v, want UNAVAILABLE", err)
	}
	if cl.connCalls != 0 || len(ap.calls) != 0 {
		t.Errorf("the node dialled the leader %d times and proposed %d commands; want neither", cl.connCalls, len(ap.calls))
	}
}

// A ForwardWrites call from a caller that is not a member counts every
// write against the caller's rate, as its Register calls would have been
// counted: beyond the burst, each further write fails alone with
// RESOURCE_EXHAUSTED.
func TestForwardWritesFromANonMemberCountsEachWrite(t *testing.T) {
	rep := fsmtest.NewReplica(t)
	s, _ := newTestConn(t, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM,
		WriteRate: 0.001, WriteBurst: 2})
	ctx := peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 4000}})
	req := &registryv1.ForwardWritesRequest{}
	for _, id := range []string{"a", "b", "c"} {
		req.Writes = append(req.Writes, &registryv1.ForwardedWrite{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", id, 1)}})
	}
	resp, err := s.ForwardWrites(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted} {
		got := codes.OK
		if e := resp.Results[i].GetError(); e != nil {
			got = codes.Code(e.GetCode())
		}
		if got != want {
			t.Errorf("write %d: %v, want %v", i, resp.Results[i], want)
		}
	}
}
