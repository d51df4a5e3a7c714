package rpc

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
	"github.com/regcenter/registry/internal/poll"
)

func create(id uint64, service string, after uint64) *registryv1.WatchManyRequest {
	return &registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Create{
		Create: &registryv1.WatchCreate{WatchId: id, Service: service, AfterIndex: after}}}
}

func cancelWatch(id uint64) *registryv1.WatchManyRequest {
	return &registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Cancel{
		Cancel: &registryv1.WatchCancel{WatchId: id}}}
}

// muxReceived is what a WatchMany message says: the watches it is for,
// then either how they ended, or its reset/index and service/id of each
// instance or event.
func muxReceived(t *testing.T, w registryv1.Registry_WatchManyClient) []string {
	t.Helper()
	msg, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ids := slices.Clone(msg.WatchIds)
	slices.Sort(ids)
	var names []string
	for _, id := range ids {
		names = append(names, strconv.FormatUint(id, 10))
	}
	out := []string{"watches " + strings.Join(names, ",")}
	if e := msg.Ended; e != nil {
		return append(out, "ended "+codes.Code(e.Code).String())
	}
	r := msg.Response
	head := "index " + strconv.FormatUint(r.Index, 10)
	if r.IsReset {
		head = "reset " + head
	}
	if r.More {
		head += " more"
	}
	out = append(out, head)
	for _, in := range r.Instances {
		out = append(out, in.Service+"/"+in.Id)
	}
	for _, ev := range r.Events {
		out = append(out, ev.Type.String()+" "+ev.Instance.Service+"/"+ev.Instance.Id)
	}
	return out
}

func send(t *testing.T, w registryv1.Registry_WatchManyClient, reqs ...*registryv1.WatchManyRequest) {
	t.Helper()
	for _, r := range reqs {
		if err := w.Send(r); err != nil {
			t.Fatal(err)
		}
	}
}

func wantMsg(t *testing.T, w registryv1.Registry_WatchManyClient, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, muxReceived(t, w)); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
}

func TestWatchManySendsOneMessagePerChangeForAllWatchesOfAServiceEncodedOncePerNode(t *testing.T) {
	st := &eventsState{fakeState: &fakeState{index: 5, changed: make(chan struct{})}}
	s, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{}, State: st})
	client := registryv1.NewRegistryClient(cc)
	ctx := testCtx(t)
	streams := make([]registryv1.Registry_WatchManyClient, 2)
	for i := range streams {
		w, err := client.WatchMany(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send(t, w, create(1, "orders", 5), create(2, "orders", 5), create(3, "orders", 5), create(9, "", 5))
		streams[i] = w
	}
	old, err := client.Watch(ctx, &registryv1.WatchRequest{Service: "orders", AfterIndex: 5})
	if err != nil {
		t.Fatal(err)
	}
	// Every create is applied before the change is published.
	waitFor(t, func() bool { return len(s.watchers) == 2*4+1 })

	st.publish(6,
		fsm.Event{Type: fsm.EventRegistered, Index: 6, Instance: fsm.Instance{Service: "orders", ID: "a"}},
		fsm.Event{Type: fsm.EventRegistered, Index: 6, Instance: fsm.Instance{Service: "payments", ID: "p"}})

	for i, w := range streams {
		got := [][]string{muxReceived(t, w), muxReceived(t, w)}
		slices.SortFunc(got, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
		want := [][]string{
			{"watches 1,2,3", "index 6", "EVENT_TYPE_REGISTERED orders/a"},
			// A watch of every service is filtered by its caller: its own message.
			{"watches 9", "index 6", "EVENT_TYPE_REGISTERED orders/a", "EVENT_TYPE_REGISTERED payments/p"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stream %d (-want +got):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff([]string{"index 6", "EVENT_TYPE_REGISTERED orders/a"}, received(t, old)); diff != "" {
		t.Errorf("Watch stream (-want +got):\n%s", diff)
	}
	if n := s.batches.encoded.Load(); n != 1 {
		t.Errorf("6 watches of orders on two WatchMany streams and one Watch: the change was encoded %d times, want once", n)
	}
}

// testCtx bounds a test's streams: a message that never comes fails the
// test in seconds.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond (a state of the server under test) for a few seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := poll.Until(ctx, func(context.Context) error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchManyStartsWithAResetAndEndsACanceledWatchOnly(t *testing.T) {
	st := &fakeState{index: 40, instances: []fsm.Instance{
		{Service: "orders", ID: "a"}, {Service: "orders", ID: "b"}, {Service: "orders", ID: "c"}}}
	s, client := newTestServer(t, &fakeCluster{}, &fakeApplier{}, st) // WatchBatch 2
	w, err := client.WatchMany(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, create(7, "orders", 0))
	wantMsg(t, w, "watches 7", "reset index 40 more", "orders/a", "orders/b")
	wantMsg(t, w, "watches 7", "index 40", "orders/c")

	send(t, w, create(8, "orders", 0))
	wantMsg(t, w, "watches 8", "reset index 40 more", "orders/a", "orders/b")
	wantMsg(t, w, "watches 8", "index 40", "orders/c")
	send(t, w, cancelWatch(7)) // 8 stays
	wantMsg(t, w, "watches 7", "ended OK")
	waitFor(t, func() bool { return len(s.watchers) == 1 }) // 7's slot is back

	// The id of an ended watch may be used again.
	send(t, w, create(7, "orders", 0))
	wantMsg(t, w, "watches 7", "reset index 40 more", "orders/a", "orders/b")
}

func TestWatchManyWatchesLeftBehindTheHistoryGetAResetNotAGap(t *testing.T) {
	st := &fakeState{index: 40, compactedCalls: 1,
		instances: []fsm.Instance{{Service: "orders", ID: "a"}}}
	_, client := newTestServer(t, &fakeCluster{}, &fakeApplier{}, st)
	w, err := client.WatchMany(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, create(1, "orders", 7), create(2, "orders", 7))
	// Both resumed after index 7, whose successors were evicted: one
	// reset for the group, never events after a gap.
	msg := muxReceived(t, w)
	if msg[0] == "watches 1" { // the two creates were applied in two rounds
		if diff := cmp.Diff([]string{"watches 1", "reset index 40", "orders/a"}, msg); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		return
	}
	if diff := cmp.Diff([]string{"watches 1,2", "reset index 40", "orders/a"}, msg); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestWatchManyRefusesACreateBeyondItsLimitsAndKeepsTheOthers(t *testing.T) {
	st := &fakeState{index: 3}
	s, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{}, State: st,
		MaxWatchesPerStream: 2, MaxWatchers: 3})
	client := registryv1.NewRegistryClient(cc)
	w, err := client.WatchMany(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, create(1, "orders", 0))
	wantMsg(t, w, "watches 1", "reset index 3")
	send(t, w, create(1, "orders", 0)) // an id that is open
	wantMsg(t, w, "watches 1", "ended InvalidArgument")
	send(t, w, create(2, "orders", 0))
	wantMsg(t, w, "watches 2", "reset index 3")

	send(t, w, create(3, "orders", 0))
	msg, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e := msg.Ended; e == nil || codes.Code(e.Code) != codes.ResourceExhausted || !strings.Contains(e.Message, "MaxWatchesPerStream") {
		t.Errorf("third watch on a stream of at most 2: %v; want it ended RESOURCE_EXHAUSTED naming MaxWatchesPerStream", msg)
	}
	// The node's limit: 3 watches, two are on the first stream.
	w2, err := client.WatchMany(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	send(t, w2, create(1, "orders", 0))
	wantMsg(t, w2, "watches 1", "reset index 3")
	send(t, w2, create(2, "orders", 0))
	msg, err = w2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e := msg.Ended; e == nil || codes.Code(e.Code) != codes.ResourceExhausted || !strings.Contains(e.Message, "--max-watchers") {
		t.Errorf("fourth watch on a node of at most 3: %v; want it ended RESOURCE_EXHAUSTED naming --max-watchers", msg)
	}
	// Ending a stream gives its slots back.
	w2.CloseSend()
	if _, err := w2.Recv(); err == nil {
		t.Error("a half-closed WatchMany stream did not end")
	}
	waitFor(t, func() bool { return len(s.watchers) == 2 })
}

func TestWatchManyChecksEachWatchAgainstTheToken(t *testing.T) {
	rep := fsmtest.NewReplica(t)
	secrets := map[string]acl.Secret{"mgmt": acl.NewSecret(), "orders": acl.NewSecret()}
	for _, msg := range []proto.Message{
		&fsmpb.ACLBootstrap{AccessorId: "mgmt", SecretHash: acl.HashSecret(secrets["mgmt"])},
		&fsmpb.ACLPolicySet{Name: "orders", Rules: `service "orders" { policy = "read" }`},
		&fsmpb.ACLTokenSet{AccessorId: "orders", SecretHash: acl.HashSecret(secrets["orders"]), Policies: []string{"orders"}},
		&fsmpb.Register{Service: "orders", Id: "a", Address: "127.0.0.1:1", Incarnation: 1, TtlNs: int64(time.Hour), BeatIntervalNs: int64(time.Second), SuspectAfterNs: int64(time.Minute), NowUnixNs: 1},
		&fsmpb.Register{Service: "payments", Id: "p", Address: "127.0.0.1:2", Incarnation: 1, TtlNs: int64(time.Hour), BeatIntervalNs: int64(time.Second), SuspectAfterNs: int64(time.Minute), NowUnixNs: 1},
	} {
		if err, ok := rep.ApplyMsg(t, msg).(error); ok {
			t.Fatal(err)
		}
	}
	s, err := New(Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.StreamInterceptor(s.StreamInterceptor()), grpc.UnaryInterceptor(s.UnaryInterceptor()))
	s.RegisterOn(gs)
	go gs.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); s.Close(); gs.Stop() })

	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer "+string(secrets["orders"]))
	w, err := registryv1.NewRegistryClient(cc).WatchMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, create(1, "payments", 0))
	msg, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e := msg.Ended; e == nil || codes.Code(e.Code) != codes.PermissionDenied || !strings.Contains(e.Message, "service:payments:read") {
		t.Errorf("watch of payments with a token for orders: %v; want it ended PERMISSION_DENIED naming the permission", msg)
	} else {
		t.Logf("refusal: %s", e.Message)
	}
	send(t, w, create(2, "", 0)) // every service: only those it may read
	wantMsg(t, w, "watches 2", "reset index 5", "orders/a")

	// A deleted token ends the stream.
	rep.ApplyMsg(t, &fsmpb.ACLTokenDelete{AccessorId: "orders"})
	for {
		_, err := w.Recv()
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("after the token was deleted: %v; want UNAUTHENTICATED", err)
			}
			break
		}
	}
}
