package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/validate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCluster is a follower that knows leader "n1" at a fixed address.
type fakeCluster struct {
	leader    bool
	conn      *grpc.ClientConn
	connCalls int
	restore   func(io.Reader) (fsm.SnapshotInfo, error)
	status    Status
}

func (c *fakeCluster) IsLeader() bool { return c.leader }
func (c *fakeCluster) Leader() (string, bool) {
	return "n1", true
}
func (c *fakeCluster) LeaderConn() (*grpc.ClientConn, error) {
	c.connCalls++
	if c.conn == nil {
		return nil, ErrNoLeader
	}
	return c.conn, nil
}
func (c *fakeCluster) ReadBarrier(context.Context) error { return nil }
func (c *fakeCluster) Status(context.Context) (Status, error) {
	return c.status, nil
}
func (c *fakeCluster) AddVoter(context.Context, string, string) (uint64, error) { return 0, nil }
func (c *fakeCluster) AddNonvoter(context.Context, string, string) (uint64, error) {
	return 0, nil
}
func (c *fakeCluster) Promote(_ context.Context, id string) (uint64, error) {
	return 0, fmt.Errorf("%w: %q", ErrNotMember, id)
}
func (c *fakeCluster) Demote(_ context.Context, id string) (uint64, error) {
	return 0, fmt.Errorf("%w: demoting %q", ErrMembershipRefused, id)
}
func (c *fakeCluster) RemoveServer(_ context.Context, id string) (uint64, error) {
	return 0, fmt.Errorf("%w: %q", ErrNotMember, id) // no server is a member
}
func (c *fakeCluster) TransferLeadership(context.Context, string) (string, error) { return "", nil }
func (c *fakeCluster) ReleaseExpiryGuard(context.Context) (bool, int, error)      { return false, 0, nil }
func (c *fakeCluster) RestoreSnapshot(_ context.Context, r io.Reader) (fsm.SnapshotInfo, error) {
	if c.restore == nil {
		return fsm.SnapshotInfo{}, errors.New("fakeCluster: no restore")
	}
	return c.restore(r)
}

// fakeApplier records proposals and fails the test if one arrives when
// none may.
type fakeApplier struct {
	mu    sync.Mutex
	calls []fsm.MessageType
}

func (a *fakeApplier) Apply(_ context.Context, e fsm.Entry) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, e.Type())
	return nil, errors.New("fakeApplier: not implemented")
}

// fakeState serves a fixed set of instances, and ErrCompacted for the first
// compactedCalls calls of EventsAfter.
type fakeState struct {
	mu             sync.Mutex
	instances      []fsm.Instance
	index          uint64
	compactedCalls int
	resets         int
	changed        chan struct{}
	backup         []byte // what WriteSnapshot writes
}

func (s *fakeState) AppliedIndex() uint64 { return s.index }

// The fake's beat secret is fixed: Register needs one.
func (s *fakeState) BeatSecret() []byte { return []byte("fake beat secret") }

// The fake has no ACL records (the ACL tests use a real fsm).
func (s *fakeState) ACLIndex() uint64 { return 0 }
func (s *fakeState) ACLResolve([]byte) (fsm.ACLToken, []fsm.ACLPolicy, uint64, bool) {
	return fsm.ACLToken{}, nil, 0, false
}
func (s *fakeState) ACLPolicy(string) (fsm.ACLPolicy, bool) { return fsm.ACLPolicy{}, false }
func (s *fakeState) ACLPolicies() ([]fsm.ACLPolicy, uint64) { return nil, s.index }
func (s *fakeState) ACLTokens() ([]fsm.ACLToken, uint64)    { return nil, s.index }
func (s *fakeState) GetService(string, bool) ([]fsm.Instance, uint64) {
	return s.instances, s.index
}
func (s *fakeState) ListServices() ([]fsm.ServiceSummary, uint64) { return nil, s.index }
func (s *fakeState) Instance(service, id string) (fsm.Instance, bool) {
	for _, in := range s.instances {
		if in.Service == service && in.ID == id {
			return in, true
		}
	}
	return fsm.Instance{}, false
}
func (s *fakeState) Node(id string) (fsm.NodeMeta, bool) {
	return fsm.NodeMeta{NodeID: id, GRPCAddress: "10.1.1.1:7001", HTTPAddress: "10.1.1.1:7201"}, id == "n1"
}
func (s *fakeState) Changed() <-chan struct{} { return s.changed }
func (s *fakeState) Reset(string) ([]fsm.Instance, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resets++
	return s.instances, s.index
}
func (s *fakeState) HashIndex() (string, uint64) { return "fake", s.index }

func (s *fakeState) WriteSnapshot(w io.Writer) (fsm.SnapshotInfo, error) {
	_, err := w.Write(s.backup)
	return fsm.SnapshotInfo{Index: s.index, Instances: len(s.instances)}, err
}
func (s *fakeState) EventsAfter(_ string, after uint64, _ int) ([]fsm.Event, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.compactedCalls > 0 {
		s.compactedCalls--
		return nil, after, fsm.ErrCompacted
	}
	return nil, max(after, s.index), nil
}

func newTestServer(t *testing.T, cl *fakeCluster, ap *fakeApplier, st *fakeState) (*Server, registryv1.RegistryClient) {
	t.Helper()
	s, cc := newTestConn(t, Config{NodeID: "n2", Applier: ap, Cluster: cl, State: st, WatchBatch: 2})
	return s, registryv1.NewRegistryClient(cc)
}

// newTestConn serves a Server made from cfg on an in-memory listener and
// returns a connection to it.
func newTestConn(t testing.TB, cfg Config) (*Server, *grpc.ClientConn) {
	t.Helper()
	if st, ok := cfg.State.(*fakeState); ok && st.changed == nil {
		st.changed = make(chan struct{})
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	s.RegisterOn(gs)
	go gs.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Close()
		gs.Stop()
	})
	return s, cc
}

func TestToStatusMapsEachErrorToOneCode(t *testing.T) {
	s := &Server{cluster: &fakeCluster{}, state: &fakeState{}}
	tests := []struct {
		err  error
		want codes.Code
	}{
		{validate.FieldErrorf("instance.id", "must not be empty"), codes.InvalidArgument},
		{fmt.Errorf("%w: header: unexpected EOF", fsm.ErrBadSnapshot), codes.InvalidArgument},
		{raft.ErrAbortedByRestore, codes.Unavailable},
		{fmt.Errorf("%w: orders/a", fsm.ErrNotFound), codes.NotFound},
		{fmt.Errorf("%w: \"n9\"", ErrNotMember), codes.NotFound},
		{fmt.Errorf("%w: orders/a at 7", fsm.ErrFenced), codes.FailedPrecondition},
		{raft.ErrNotLeader, codes.Unavailable},
		{raft.ErrLeadershipLost, codes.Unavailable},
		{fmt.Errorf("%w: %w", fsm.ErrLeadershipLost, errors.New("raft: lost")), codes.Unavailable},
		{ErrNoLeader, codes.Unavailable},
		{ErrShuttingDown, codes.Unavailable},
		{groupcommit.ErrOverloaded, codes.ResourceExhausted},
		{ErrTooManyWatchers, codes.ResourceExhausted},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{status.Error(codes.Aborted, "from the leader"), codes.Aborted},
		{errors.New("surprise"), codes.Internal},
	}
	for _, tt := range tests {
		if got := status.Code(s.toStatus(tt.err)); got != tt.want {
			t.Errorf("toStatus(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestUnavailableCarriesTheLeaderHint(t *testing.T) {
	s := &Server{cluster: &fakeCluster{}, state: &fakeState{}}
	st := status.Convert(s.toStatus(raft.ErrNotLeader))
	want := []any{
		&registryv1.WriteOutcome{Proposed: false},
		&registryv1.LeaderHint{LeaderId: "n1", LeaderGrpcAddress: "10.1.1.1:7001", LeaderHttpAddress: "10.1.1.1:7201"},
	}
	if diff := cmp.Diff(want, st.Details(), protocmp.Transform()); diff != "" {
		t.Errorf("details (-want +got):\n%s", diff)
	}
}

func TestEveryUnavailableSaysWhetherTheWriteWasProposed(t *testing.T) {
	s := &Server{cluster: &fakeCluster{}, state: &fakeState{}}
	tests := []struct {
		err      error
		proposed bool
	}{
		{ErrNoLeader, false},
		{fmt.Errorf("forwarding: %w", ErrNotLeader), false},
		{raft.ErrNotLeader, false},
		{raft.ErrLeadershipTransferInProgress, false},
		{raft.ErrEnqueueTimeout, false},
		{ErrShuttingDown, false},
		{groupcommit.ErrClosed, false},
		{raft.ErrLeadershipLost, true},
		{raft.ErrRaftShutdown, true},
		{raft.ErrAbortedByRestore, true},
		// A forwarded call's status without a WriteOutcome: gRPC could not
		// connect (never sent), or the call failed once sent (unknown).
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
	}
	for _, tt := range tests {
		st := status.Convert(s.toStatus(tt.err))
		if st.Code() != codes.Unavailable {
			t.Errorf("toStatus(%v) = %v, want UNAVAILABLE", tt.err, st.Code())
			continue
		}
		want := &registryv1.WriteOutcome{Proposed: tt.proposed}
		if diff := cmp.Diff(want, detailOf[*registryv1.WriteOutcome](st), protocmp.Transform()); diff != "" {
			t.Errorf("toStatus(%v) WriteOutcome (-want +got):\n%s", tt.err, diff)
		}
	}
	// The leader's own outcome passes through a forwarding node unchanged.
	fromLeader, _ := status.New(codes.Unavailable, "leadership lost while committing log").
		WithDetails(&registryv1.WriteOutcome{Proposed: true})
	if got := s.toStatus(fromLeader.Err()); !proto.Equal(status.Convert(got).Proto(), fromLeader.Proto()) {
		t.Errorf("a forwarded status with its outcome became %v", status.Convert(got).Proto())
	}
}

func TestAForwardedCallIsNeverForwardedAgain(t *testing.T) {
	cl, ap := &fakeCluster{}, &fakeApplier{}
	_, client := newTestServer(t, cl, ap, &fakeState{})
	ctx := metadata.AppendToOutgoingContext(t.Context(), forwardedKey, "n3")
	in := &registryv1.Instance{Service: "orders", Id: "a", Address: "h:1"}
	_, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: in})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("forwarded Register on a follower: got %v, want UNAVAILABLE", err)
	}
	_, err = client.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "a"}}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("forwarded Beat on a follower: got %v, want UNAVAILABLE", err)
	}
	if cl.connCalls != 0 || len(ap.calls) != 0 {
		t.Errorf("the follower dialled the leader %d times and proposed %d commands; want neither", cl.connCalls, len(ap.calls))
	}
}

func TestRemovingANonMemberIsNotFoundUnlessItsAddressRecordIsLeft(t *testing.T) {
	ap := &fakeApplier{}
	s, _ := newTestServer(t, &fakeCluster{leader: true}, ap, &fakeState{})
	_, err := s.Remove(t.Context(), &registryv1.RemoveRequest{NodeId: "n7"})
	if status.Code(err) != codes.NotFound || len(ap.calls) != 0 {
		t.Errorf("Remove of n7, neither a member nor recorded: %v after %d proposals; want NOT_FOUND and none", err, len(ap.calls))
	}
	// n1's address record outlived its removal: Remove clears it.
	s.Remove(t.Context(), &registryv1.RemoveRequest{NodeId: "n1"})
	if diff := cmp.Diff([]fsm.MessageType{fsm.NodeMetaType}, ap.calls); diff != "" {
		t.Errorf("Remove of n1, recorded but not a member: proposals (-want +got):\n%s", diff)
	}
}

func TestStatusAnswersTheNodesStatusInTheAPIForm(t *testing.T) {
	cl := &fakeCluster{status: Status{
		NodeID: "n2", Role: "follower", Term: 3, LeaderID: "n1",
		LeaderGRPCAddress: "10.1.1.1:7001", LeaderHTTPAddress: "10.1.1.1:7201",
		AppliedIndex: 40, CommitIndex: 41, LastLogIndex: 42,
		Members: []Member{
			{ID: "n1", RaftAddress: "10.1.1.1:7000", GRPCAddress: "10.1.1.1:7001", HTTPAddress: "10.1.1.1:7201", Voter: true, Leader: true},
			{ID: "n2", RaftAddress: "10.1.1.2:7000", Voter: true},
			{ID: "r1", RaftAddress: "127.0.0.3:7000"},
		},
		ExpiryGuardEngaged: true, ExpiriesHeld: 12, FailoverFenceRemaining: 3 * time.Second,
		ClockSkew: -5 * time.Millisecond, ClockSkewKnown: true,
	}}
	s, _ := newTestServer(t, cl, &fakeApplier{}, &fakeState{index: 40})
	got, err := s.Status(t.Context(), &registryv1.StatusRequest{IncludeStateHash: true})
	if err != nil {
		t.Fatal(err)
	}
	want := &registryv1.StatusResponse{
		NodeId: "n2", Role: "follower", Term: 3, LeaderId: "n1",
		LeaderGrpcAddress: "10.1.1.1:7001", LeaderHttpAddress: "10.1.1.1:7201",
		AppliedIndex: 40, CommitIndex: 41, LastLogIndex: 42,
		Members: []*registryv1.Member{
			{Id: "n1", RaftAddress: "10.1.1.1:7000", GrpcAddress: "10.1.1.1:7001", HttpAddress: "10.1.1.1:7201", Voter: true, Leader: true, Role: "voter"},
			{Id: "n2", RaftAddress: "10.1.1.2:7000", Voter: true, Role: "voter"},
			{Id: "r1", RaftAddress: "127.0.0.3:7000", Role: "replica"},
		},
		ExpiryGuardEngaged: true, ExpiriesHeld: 12, FailoverFenceRemaining: durationpb.New(3 * time.Second),
		ClockSkew: durationpb.New(-5 * time.Millisecond), StateHash: "fake", StateHashIndex: 40,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
}

func TestInvalidInputIsRefusedBeforeAnythingIsProposed(t *testing.T) {
	ap := &fakeApplier{}
	_, client := newTestServer(t, &fakeCluster{leader: true}, ap, &fakeState{})
	ctx := t.Context()
	_, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Address: "h:1"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Register without id: got %v, want INVALID_ARGUMENT", err)
	}
	_, err = client.Beat(ctx, &registryv1.BeatRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty Beat: got %v, want INVALID_ARGUMENT", err)
	}
	_, err = client.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Deregister without id: got %v, want INVALID_ARGUMENT", err)
	}
	if len(ap.calls) != 0 {
		t.Errorf("%d commands proposed for invalid input", len(ap.calls))
	}
}

func TestAWatcherThatFallsBehindTheHistoryGetsAResetNotAGap(t *testing.T) {
	st := &fakeState{
		index:          40,
		compactedCalls: 1, // the resumed watcher's events were evicted
		instances: []fsm.Instance{
			{Service: "orders", ID: "a", State: fsm.StateHealthy},
			{Service: "orders", ID: "b", State: fsm.StateSuspect},
			{Service: "orders", ID: "c", State: fsm.StateHealthy},
		},
	}
	_, client := newTestServer(t, &fakeCluster{}, &fakeApplier{}, st)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := client.Watch(ctx, &registryv1.WatchRequest{Service: "orders", AfterIndex: 7})
	if err != nil {
		t.Fatal(err)
	}
	// WatchBatch is 2: the reset of three instances spans two messages.
	var ids []string
	for i := range 2 {
		msg, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.IsReset != (i == 0) || msg.More != (i == 0) || msg.Index != 40 {
			t.Fatalf("message %d: is_reset %v more %v index %d; want %v, %v, 40", i, msg.IsReset, msg.More, msg.Index, i == 0, i == 0)
		}
		for _, in := range msg.Instances {
			ids = append(ids, in.Id+":"+in.State.String())
		}
	}
	want := []string{"a:INSTANCE_STATE_HEALTHY", "b:INSTANCE_STATE_SUSPECT", "c:INSTANCE_STATE_HEALTHY"}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("reset instances (-want +got):\n%s", diff)
	}
}

func TestWatchSlotsAreBounded(t *testing.T) {
	st := &fakeState{}
	s, client := newTestServer(t, &fakeCluster{}, &fakeApplier{}, st)
	s.watchers = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w1, err := client.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Recv(); err != nil { // the reset: the watch holds its slot
		t.Fatal(err)
	}
	w2, err := client.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second watch with one slot: got %v, want RESOURCE_EXHAUSTED", err)
	}
}

func TestMatchRejectionsPairsEachRejectionWithItsBeat(t *testing.T) {
	ref := func(id string, inc uint64) *registryv1.InstanceRef {
		return &registryv1.InstanceRef{Service: "s", Id: id, Incarnation: inc}
	}
	refs := []*registryv1.InstanceRef{ref("a", 1), ref("b", 1), ref("a", 1), ref("c", 2)}
	rej := []*registryv1.BeatRejection{
		{Instance: ref("b", 1), Reason: registryv1.BeatRejectReason_BEAT_REJECT_REASON_UNKNOWN},
		{Instance: ref("c", 2), Reason: registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED},
	}
	out, err := matchRejections(refs, nil, rej, 9)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		wantRejected := i == 1 || i == 3
		if (o.rejection != nil) != wantRejected || o.index != 9 {
			t.Errorf("beat %d: rejection %v index %d; want rejected=%v at 9", i, o.rejection, o.index, wantRejected)
		}
	}
	if _, err := matchRejections(refs, nil, []*registryv1.BeatRejection{{Instance: ref("z", 1)}}, 9); err == nil {
		t.Error("a rejection that matches no beat was accepted")
	}
}

func TestAboveMaxBeatRateBeatRepliesRecommendALongerInterval(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	st := &fakeState{instances: []fsm.Instance{
		{Service: "s", ID: "fast", BeatInterval: time.Second},
		{Service: "s", ID: "slow", BeatInterval: 4 * time.Second},
	}}
	s := &Server{cfg: Config{MaxBeatRate: 100}, state: st, rate: rateMeter{clock: func() time.Time { return now }}}
	refs := func(n int) []*registryv1.InstanceRef {
		out := make([]*registryv1.InstanceRef, n)
		for i := range out {
			out[i] = &registryv1.InstanceRef{Service: "s", Id: []string{"fast", "slow"}[i%2], Incarnation: 1}
		}
		return out
	}
	if got := s.recommendInterval(refs(100)); got != 0 {
		t.Errorf("at 100 beats/s (the maximum): recommended %v, want 0", got)
	}
	// 150 beats this second: ask for 1.5 × the shortest interval.
	if got := s.recommendInterval(refs(50)); got != 1500*time.Millisecond {
		t.Errorf("at 150 beats/s: recommended %v, want 1.5s", got)
	}
	// The next second starts from the last whole second's rate; two seconds
	// later the overload is forgotten.
	now = now.Add(3 * time.Second)
	if got := s.recommendInterval(refs(10)); got != 0 {
		t.Errorf("after the load went away: recommended %v, want 0", got)
	}
}
