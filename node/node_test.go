package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, nodetest.LeakOptions()...) }

// newCluster starts an in-process cluster of n nodes.
func newCluster(t *testing.T, n int) *cluster { return &cluster{nodetest.New(t, n, nil)} }

type cluster struct{ *nodetest.Cluster }

func (c *cluster) leader() int                              { return c.Leader() }
func (c *cluster) registry(i int) registryv1.RegistryClient { return c.Registry(i) }
func (c *cluster) shutdown(i int) error                     { return c.Shutdown(i) }

func testLogger(t testing.TB, id string) *slog.Logger { return nodetest.Logger(t, id) }

func instance(service, id string) *registryv1.Instance {
	return &registryv1.Instance{
		Service:      service,
		Id:           id,
		Address:      "10.0.0.5:8080",
		Metadata:     map[string]string{"zone": "a"},
		Incarnation:  1,
		BeatInterval: durationpb.New(time.Second),
		SuspectAfter: durationpb.New(3 * time.Second),
		Ttl:          durationpb.New(10 * time.Second),
	}
}

func TestRegisterThroughAFollowerIsReplicatedToEveryNode(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx := t.Context()

	resp, err := c.registry(follower).Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "orders-1")})
	if err != nil {
		t.Fatalf("Register through follower: %v", err)
	}
	if resp.Index == 0 || resp.Instance.State != registryv1.InstanceState_INSTANCE_STATE_HEALTHY {
		t.Fatalf("Register answered %v, want a HEALTHY instance at a Raft index", resp)
	}
	want := &registryv1.Instance{Service: "orders", Id: "orders-1", Address: "10.0.0.5:8080", Metadata: map[string]string{"zone": "a"}, Incarnation: 1}
	onlyIdentity := protocmp.FilterField(&registryv1.Instance{}, "service", cmp.Comparer(func(a, b string) bool { return a == b }))
	_ = onlyIdentity
	for i := range c.Nodes {
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			got, err := c.registry(i).GetService(ctx, &registryv1.GetServiceRequest{Service: "orders", Consistency: registryv1.Consistency_CONSISTENCY_STALE})
			if err != nil {
				return err
			}
			if len(got.Instances) != 1 {
				return fmt.Errorf("n%d has %d instances at index %d", i+1, len(got.Instances), got.Index)
			}
			in := got.Instances[0]
			gotIdentity := &registryv1.Instance{Service: in.Service, Id: in.Id, Address: in.Address, Metadata: in.Metadata, Incarnation: in.Incarnation}
			if diff := cmp.Diff(want, gotIdentity, protocmp.Transform()); diff != "" {
				t.Errorf("n%d instance (-want +got):\n%s", i+1, diff)
			}
			return nil
		})
	}
	// Every replica holds the same state.
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		h := c.Nodes[0].FSM().Hash()
		for _, nd := range c.Nodes[1:] {
			if got := nd.FSM().Hash(); got != h {
				return fmt.Errorf("%s hash %s, n1 hash %s", nd.ID(), got, h)
			}
		}
		return nil
	})
}

func TestReadsAtEachConsistencyFromAFollower(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "a")}); err != nil {
		t.Fatal(err)
	}
	for _, cons := range []registryv1.Consistency{registryv1.Consistency_CONSISTENCY_DEFAULT, registryv1.Consistency_CONSISTENCY_LINEARIZABLE} {
		// DEFAULT and LINEARIZABLE are answered by the leader: the write
		// acknowledged above is visible at once, through any node.
		got, err := c.registry(follower).GetService(ctx, &registryv1.GetServiceRequest{Service: "orders", Consistency: cons})
		if err != nil {
			t.Fatalf("%v read through follower: %v", cons, err)
		}
		if len(got.Instances) != 1 || !got.KnownLeader {
			t.Errorf("%v read through follower: %d instances, known_leader %v; want 1, true", cons, len(got.Instances), got.KnownLeader)
		}
	}
	list, err := c.registry(follower).ListServices(ctx, &registryv1.ListServicesRequest{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*registryv1.ServiceSummary{{Service: "orders", Healthy: 1}}, list.Services, protocmp.Transform()); diff != "" {
		t.Errorf("ListServices (-want +got):\n%s", diff)
	}
}

func TestBeatsThroughFollowersAreCommittedAndUnknownOnesReported(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	ctx := t.Context()
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "a")}); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Nodes[leader].FSM().Instance("orders", "a")
	for i := range c.Nodes {
		resp, err := c.registry(i).Beat(ctx, &registryv1.BeatRequest{Seq: 7, Beats: []*registryv1.InstanceRef{
			{Service: "orders", Id: "a", Incarnation: 1},
			{Service: "orders", Id: "ghost", Incarnation: 1},
			{Service: "orders", Id: "a", Incarnation: 2},
		}})
		if err != nil {
			t.Fatalf("Beat through n%d: %v", i+1, err)
		}
		want := []*registryv1.BeatRejection{
			{Instance: &registryv1.InstanceRef{Service: "orders", Id: "ghost", Incarnation: 1}, Reason: registryv1.BeatRejectReason_BEAT_REJECT_REASON_UNKNOWN},
			{Instance: &registryv1.InstanceRef{Service: "orders", Id: "a", Incarnation: 2}, Reason: registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED, CurrentIncarnation: 1},
		}
		if diff := cmp.Diff(want, resp.Rejected, protocmp.Transform()); diff != "" {
			t.Errorf("Beat through n%d rejections (-want +got):\n%s", i+1, diff)
		}
		if resp.Seq != 7 || resp.Index <= before.LastBeatIndex {
			t.Errorf("Beat through n%d: seq %d index %d; want seq 7 and an index above %d", i+1, resp.Seq, resp.Index, before.LastBeatIndex)
		}
		after, _ := c.Nodes[leader].FSM().Instance("orders", "a")
		if after.LastBeatIndex != resp.Index {
			t.Errorf("after the beat through n%d the leader has last_beat_index %d, want the batch's %d", i+1, after.LastBeatIndex, resp.Index)
		}
	}
}

func TestBeatStreamAnswersEveryFrameInOrder(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	for i := range 20 {
		if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := c.registry(follower).BeatStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const frames = 100
	go func() {
		for seq := range uint64(frames) {
			stream.Send(&registryv1.BeatRequest{Seq: seq, Beats: []*registryv1.InstanceRef{{Service: "orders", Id: fmt.Sprint(seq % 20), Incarnation: 1}}})
		}
		stream.CloseSend()
	}()
	for seq := range uint64(frames) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("frame %d: %v", seq, err)
		}
		if resp.Seq != seq || len(resp.Rejected) != 0 || resp.Index == 0 {
			t.Fatalf("frame %d answered %v; want seq %d, no rejections, an index", seq, resp, seq)
		}
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still open after the client half-closed and every frame was answered")
	}
}

func TestWatchStartsWithAResetThenStreamsEventsAndResumes(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 2) % 3
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reg := c.registry(leader)
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "a")}); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if _, ok := c.Nodes[follower].FSM().Instance("orders", "a"); !ok {
			return errors.New("not replicated yet")
		}
		return nil
	})
	w, err := c.registry(follower).Watch(ctx, &registryv1.WatchRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !first.IsReset || len(first.Instances) != 1 || first.Instances[0].Id != "a" || first.More {
		t.Fatalf("first watch message %v, want a complete reset holding orders/a", first)
	}
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: instance("other", "x")}); err != nil {
		t.Fatal(err)
	}
	dereg, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var last uint64
	for len(got) < 2 {
		msg, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msg.Events {
			if ev.Index <= last {
				t.Errorf("event index %d after %d: not in order", ev.Index, last)
			}
			last = ev.Index
			got = append(got, fmt.Sprintf("%s %s", ev.Type, ev.Instance.Id))
		}
	}
	want := []string{"EVENT_TYPE_REGISTERED b", "EVENT_TYPE_DEREGISTERED a"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events of orders (-want +got):\n%s", diff)
	}
	if last != dereg.Index {
		t.Errorf("last event at index %d, want the deregistration's %d", last, dereg.Index)
	}

	// Resuming from the first reset's index replays exactly the same events.
	w2, err := c.registry(leader).Watch(ctx, &registryv1.WatchRequest{Service: "orders", AfterIndex: first.Index})
	if err != nil {
		t.Fatal(err)
	}
	var replay []string
	for len(replay) < 2 {
		msg, err := w2.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.IsReset {
			t.Fatalf("resume from index %d got a reset; the history holds it", first.Index)
		}
		for _, ev := range msg.Events {
			replay = append(replay, fmt.Sprintf("%s %s", ev.Type, ev.Instance.Id))
		}
	}
	if diff := cmp.Diff(want, replay); diff != "" {
		t.Errorf("resumed events (-want +got):\n%s", diff)
	}
}

func TestErrorsMapToStatusCodes(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	reg := c.registry(follower)
	in := instance("orders", "a")
	in.Incarnation = 5
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	stale := instance("orders", "a")
	stale.Incarnation = 4
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"invalid registration", func() error {
			_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "")})
			return err
		}, codes.InvalidArgument},
		{"lower incarnation", func() error {
			_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: stale})
			return err
		}, codes.FailedPrecondition},
		{"deregister unknown", func() error {
			_, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "ghost"})
			return err
		}, codes.NotFound},
		{"deregister other incarnation", func() error {
			_, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "a", Incarnation: 4})
			return err
		}, codes.FailedPrecondition},
		{"unknown consistency", func() error {
			_, err := reg.GetService(ctx, &registryv1.GetServiceRequest{Service: "orders", Consistency: 9})
			return err
		}, codes.InvalidArgument},
		{"expired deadline", func() error {
			dctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
			defer cancel()
			<-dctx.Done()
			_, err := reg.Register(dctx, &registryv1.RegisterRequest{Instance: instance("orders", "late")})
			return err
		}, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGracefulShutdownOfTheLeaderHandsOverLeadership(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	if err := c.shutdown(leader); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		for i, nd := range c.Nodes {
			if i != leader && nd.IsLeader() {
				return nil
			}
		}
		return errors.New("no new leader")
	})
}

func TestStartupProblemsAreClearErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() node.Config {
		cfg := node.DefaultConfig()
		cfg.NodeID = "n1"
		cfg.DataDir = t.TempDir()
		cfg.RaftAddr = "127.0.0.1:0"
		cfg.GRPCAddr = "127.0.0.1:0"
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.Logger = testLogger(t, "n1")
		return cfg
	}
	tests := []struct {
		name   string
		mutate func(*node.Config)
		want   string
	}{
		{"grpc port in use", func(c *node.Config) { c.GRPCAddr = busy.Addr().String() }, "grpc addr"},
		{"http port in use", func(c *node.Config) { c.HTTPAddr = busy.Addr().String() }, "http addr"},
		{"raft port in use", func(c *node.Config) { c.RaftAddr = busy.Addr().String() }, "raft addr"},
		{"data dir is a file", func(c *node.Config) { c.DataDir = filepath.Join(file, "sub") }, "data dir"},
		{"no node id", func(c *node.Config) { c.NodeID = "" }, "node id"},
		{"peers without this node", func(c *node.Config) { c.BootstrapPeers = []node.Peer{{ID: "x", Address: "127.0.0.1:1"}} }, "do not name this node"},
		{"unspecified advertise", func(c *node.Config) { c.RaftAddr = "0.0.0.0:0" }, "--raft-advertise"},
		{"read replica without join", func(c *node.Config) { c.ReadReplica = true }, "read replica: needs join"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mutate(&cfg)
			n, err := node.New(cfg)
			if err == nil {
				n.Shutdown(context.Background())
				t.Fatal("New succeeded")
			}
			if !contains(err.Error(), tt.want) {
				t.Errorf("New: %q does not name %q", err, tt.want)
			}
		})
	}
	t.Run("data dir in use", func(t *testing.T) {
		cfg := base()
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Shutdown(context.Background())
		second := base()
		second.DataDir = cfg.DataDir
		if _, err := node.New(second); !errors.Is(err, node.ErrDataDirInUse) {
			t.Errorf("second node on the same data dir: got %v, want ErrDataDirInUse", err)
		}
	})
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestAnInstanceThatStopsBeatingIsSuspectedThenExpiredOnEveryNode(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	follower := (leader + 1) % 3
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w, err := c.registry(follower).Watch(ctx, &registryv1.WatchRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the initial reset
		t.Fatal(err)
	}
	in := instance("orders", "a")
	in.BeatInterval, in.SuspectAfter, in.Ttl = durationpb.New(100*time.Millisecond), durationpb.New(300*time.Millisecond), durationpb.New(600*time.Millisecond)
	reg, err := c.registry(follower).Register(ctx, &registryv1.RegisterRequest{Instance: in})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		msg, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msg.Events {
			got = append(got, ev.Type.String())
			switch ev.Type {
			case registryv1.EventType_EVENT_TYPE_SUSPECT, registryv1.EventType_EVENT_TYPE_EXPIRED:
				since := ev.SinceLastBeat.AsDuration()
				min := 300 * time.Millisecond
				if ev.Type == registryv1.EventType_EVENT_TYPE_EXPIRED {
					min = 600 * time.Millisecond
				}
				if since < min {
					t.Errorf("%v %v after the last beat, before its deadline of %v", ev.Type, since, min)
				}
				if !ev.LastBeatAt.AsTime().Equal(reg.Instance.LastBeatAt.AsTime()) {
					t.Errorf("%v names last beat %v, want the registration's %v", ev.Type, ev.LastBeatAt.AsTime(), reg.Instance.LastBeatAt.AsTime())
				}
			}
		}
	}
	want := []string{"EVENT_TYPE_REGISTERED", "EVENT_TYPE_SUSPECT", "EVENT_TYPE_EXPIRED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for i, nd := range c.Nodes {
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			if _, ok := nd.FSM().Instance("orders", "a"); ok {
				return fmt.Errorf("n%d still holds the expired instance", i+1)
			}
			return nil
		})
	}
}

func TestOnlyTheLeaderRunsTheChecker(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		for i := range c.Nodes {
			st, err := registryv1.NewClusterClient(c.Conns[i]).Status(t.Context(), &registryv1.StatusRequest{})
			if err != nil {
				return err
			}
			if st.CheckerRunning != (i == leader) {
				return fmt.Errorf("n%d (leader: %v) reports checker_running %v", i+1, i == leader, st.CheckerRunning)
			}
		}
		return nil
	})
}

// A leader whose clock is behind the previous leader's continues from the
// previous leader's time base: an instance that stopped beating under the
// old leader is removed about its ttl after its last beat, not the clock
// offset later (it was a minute here, before the node adopted the offset).
func TestALeaderWithASlowClockRemovesDeadInstancesOnTime(t *testing.T) {
	const behind = time.Minute
	c := &cluster{nodetest.New(t, 3, func(cfg *node.Config) {
		if cfg.NodeID == "n3" {
			cfg.Clock = func() time.Time { return time.Now().Add(-behind) }
		}
	})}
	const slow = 2 // n3
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	leader := c.leader()
	if leader == slow {
		if _, err := c.Nodes[slow].TransferLeadership(ctx, "n1"); err != nil {
			t.Fatal(err)
		}
		leader = c.leader()
	}
	in := instance("orders", "dies")
	const ttl = 2 * time.Second
	in.BeatInterval, in.SuspectAfter, in.Ttl = durationpb.New(100*time.Millisecond), durationpb.New(time.Second), durationpb.New(ttl)
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	lastBeat := time.Now() // by the real clock; the instance never beats again
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if _, ok := c.Nodes[slow].FSM().Instance("orders", "dies"); !ok {
			return errors.New("n3 has not applied the registration yet")
		}
		return nil
	})
	if _, err := c.Nodes[leader].TransferLeadership(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	if c.leader() != slow {
		t.Fatal("n3 does not lead after the transfer")
	}
	// The bound: ttl, or the failover grace (1s here) plus the beat interval
	// after the promotion, plus sweeps, commits and a loaded machine.
	const bound = ttl + 3*time.Second
	var gone time.Duration
	poll.Eventually(t, bound+time.Second, func(context.Context) error {
		if _, ok := c.Nodes[slow].FSM().Instance("orders", "dies"); ok {
			return fmt.Errorf("n3 still holds the dead instance %v after its last beat", time.Since(lastBeat))
		}
		gone = time.Since(lastBeat)
		return nil
	})
	if !c.Nodes[slow].IsLeader() {
		t.Fatal("n3 lost leadership: another leader may have removed the instance")
	}
	t.Logf("removed %v after its last beat (ttl %v, leader's clock %v behind)", gone, ttl, behind)
	if gone < ttl {
		t.Errorf("removed %v after its last beat, before its ttl of %v", gone, ttl)
	}
	if gone > bound {
		t.Errorf("removed %v after its last beat, later than %v", gone, bound)
	}
}

// blockingReader blocks every Read until release is closed, then fails.
type blockingReader struct{ release chan struct{} }

func (r blockingReader) Read([]byte) (int, error) {
	<-r.release
	return 0, errors.New("released")
}

// A scrape reads Raft without going through its main loop: it answers, with
// the last snapshot's index, while the leader's main loop is held up (here
// in a user restore whose reader blocks; a large restore or a slow disk hold
// it the same way).
func TestAScrapeDoesNotWaitForRaftsMainLoop(t *testing.T) {
	c, leader, _ := newHTTPCluster(t)
	nd := c.Nodes[leader]
	snap := nd.Raft().Snapshot()
	if err := snap.Error(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	wantLine := fmt.Sprintf("registry_raft_last_snapshot_index %d\n", meta.Index)
	if body := scrape(t, nd); !strings.Contains(body, wantLine) {
		t.Fatalf("after a snapshot at %d: /metrics has no %q:\n%s", meta.Index, wantLine, grepLines(body, "snapshot"))
	}

	release := make(chan struct{})
	restored := make(chan error, 1)
	go func() {
		restored <- nd.Raft().Restore(&raft.SnapshotMeta{Version: raft.SnapshotVersionMax}, blockingReader{release}, 0)
	}()
	defer func() {
		close(release)
		<-restored
	}()
	// The main loop is busy once it no longer answers a leadership check.
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		f := nd.Raft().VerifyLeader()
		done := make(chan struct{})
		go func() { f.Error(); close(done) }()
		select {
		case <-done:
			return errors.New("the main loop still answers")
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+nd.HTTPAddr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape while Raft's main loop is busy: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape while Raft's main loop is busy: %v", err)
	}
	if !strings.Contains(string(body), wantLine) {
		t.Errorf("scrape while Raft's main loop is busy: no %q", wantLine)
	}
}

// Each node publishes its own addresses: a stale record (as a restore from
// an older backup leaves) is repaired on every replica, the leader's by the
// leader itself, a follower's through the leader.
func TestEveryNodeRepairsItsAddressRecord(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	stale := []int{leader, (leader + 1) % 3} // the leader and a follower
	for _, i := range stale {
		meta := &fsmpb.NodeMeta{NodeId: c.Nodes[i].ID(), GrpcAddress: "127.0.0.1:1"}
		if _, err := fsm.Propose[*fsm.NodeMetaResult](t.Context(), c.Nodes[leader], meta); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range stale {
		want := c.Nodes[i].GRPCAddr()
		for j, nd := range c.Nodes {
			poll.Eventually(t, 10*time.Second, func(context.Context) error {
				if meta, ok := nd.FSM().Node(c.Nodes[i].ID()); !ok || meta.GRPCAddress != want {
					return fmt.Errorf("n%d's record of %s: %+v, want gRPC address %s", j+1, c.Nodes[i].ID(), meta, want)
				}
				return nil
			})
		}
	}
}
