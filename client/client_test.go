package client_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/regcenter/registry/internal/poll"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/node/nodetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, nodetest.LeakOptions()...) }

// Short timing so that liveness plays out in well under a second.
var fast = []client.RegisterOption{
	client.WithBeatInterval(100 * time.Millisecond),
	client.WithSuspectAfter(250 * time.Millisecond),
	client.WithTTL(500 * time.Millisecond),
}

func newClient(t *testing.T, endpoints []string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Endpoints:   endpoints,
		CallTimeout: 2 * time.Second,
		BackoffMax:  200 * time.Millisecond,
		Logger:      nodetest.Logger(t, "client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func instance(id string) client.Instance {
	return client.Instance{Service: "orders", ID: id, Address: "127.0.0.5:8080", Metadata: map[string]string{"zone": "a"}}
}

func ids(ins []client.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return out
}

func TestRegisterDiscoverAndDeregister(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx := t.Context()
	reg, err := c.Register(ctx, instance("orders-1"), fast...)
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-reg.Events(); ev.Type != client.Registered {
		t.Errorf("first registration event %v, want registered", ev.Type)
	}
	got, err := c.Discover(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"orders-1"}, ids(got)); diff != "" {
		t.Fatalf("Discover (-want +got):\n%s", diff)
	}
	if got[0].Address != "127.0.0.5:8080" || got[0].Metadata["zone"] != "a" || got[0].State != client.Healthy {
		t.Errorf("discovered %+v", got[0])
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		got, err := c.Discover(ctx, "orders")
		if err != nil || len(got) != 0 {
			return fmt.Errorf("Discover after Deregister: %v, %v", ids(got), err)
		}
		return nil
	})
}

func TestBadConfigurationIsAClearError(t *testing.T) {
	if _, err := client.New(client.Config{}); !errors.Is(err, client.ErrNoEndpoints) {
		t.Errorf("New without endpoints: %v, want ErrNoEndpoints", err)
	}
	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Register(t.Context(), instance("a"), client.WithBeatInterval(time.Second), client.WithTTL(2*time.Second))
	if err == nil || !strings.Contains(err.Error(), "instance.ttl") || !strings.Contains(err.Error(), "3 × beat_interval") {
		t.Errorf("Register with TTL < 3 × interval: %v; want an error naming instance.ttl and the limit", err)
	}
	if _, err := c.Discover(t.Context(), "no/slash"); err == nil {
		t.Error("Discover of an invalid service name succeeded")
	}
}

// watchAll records the events of a Watch until the channel closes.
type recorder struct {
	mu     sync.Mutex
	events []client.Event
}

func (r *recorder) run(ch <-chan client.Event) {
	for ev := range ch {
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	}
}

func (r *recorder) snapshot() []client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func TestBeatsKeepAnInstanceAliveAcrossALeaderChange(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := c.Register(ctx, instance("a"), fast...); err != nil {
		t.Fatal(err)
	}
	ch, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	done := make(chan struct{})
	go func() { defer close(done); rec.run(ch) }()

	if err := cl.Shutdown(leader); err != nil {
		t.Fatal(err)
	}
	newLeader := cl.Leader()
	// Five TTLs under the new leader.
	time.Sleep(2500 * time.Millisecond) // the scenario: time passes while the client beats
	got, err := c.Discover(ctx, "orders", client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a"}, ids(got)); diff != "" {
		t.Errorf("after the leader change (n%d → n%d) (-want +got):\n%s", leader+1, newLeader+1, diff)
	}
	cancel()
	<-done
	for _, ev := range rec.snapshot() {
		if ev.Type == client.EventExpired || ev.Type == client.EventDeregistered {
			t.Errorf("event %v for a beating instance", ev.Type)
		}
	}
}

func TestTheClientFailsOverWhenItsNodeDies(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx := t.Context()
	reg, err := c.Register(ctx, instance("a"), fast...)
	if err != nil {
		t.Fatal(err)
	}
	connected := slices.Index(cl.Endpoints(), c.Endpoint())
	if err := cl.Shutdown(connected); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	other := (connected + 1) % 3
	// Beats continue through another node: the leader stamps beats after
	// the node died, and the client has moved on.
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		now, ok := cl.Nodes[other].FSM().Instance("orders", "a")
		if !ok {
			return errors.New("instance gone")
		}
		if last := time.Unix(0, now.LastBeatAt); !last.After(died) {
			return fmt.Errorf("last beat at %v, before the node died at %v", last, died)
		}
		if c.Endpoint() == cl.Endpoints()[connected] {
			return errors.New("the client still uses the dead node")
		}
		return nil
	})
	for {
		select {
		case ev := <-reg.Events():
			if ev.Type == client.Reregistered || ev.Type == client.Deregistered {
				t.Errorf("registration event %v: the instance should have stayed registered", ev.Type)
			}
			continue
		default:
		}
		break
	}
}

func TestAnInstanceTheRegistryDroppedIsRegisteredAgainWithAHigherIncarnation(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx := t.Context()
	reg, err := c.Register(ctx, instance("a"), client.WithBeatInterval(200*time.Millisecond), client.WithTTL(time.Second), client.WithIncarnation(7))
	if err != nil {
		t.Fatal(err)
	}
	<-reg.Events() // registered
	// The registry loses the instance (as after an expiry while the client
	// was cut off, or a restore from an older backup).
	if _, err := cl.Registry(leader).Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "a"}); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	select {
	case ev := <-reg.Events():
		if ev.Type != client.Reregistered || ev.Incarnation != 8 {
			t.Fatalf("event %v at incarnation %d, want reregistered at 8", ev.Type, ev.Incarnation)
		}
		// Found by the next beat (≤ 1 interval), registered after ≤ ½
		// interval: a figure, not a pass/fail timing on a shared machine.
		t.Logf("re-registered %v after the drop (beat interval 200ms)", time.Since(dropped))
	case <-time.After(5 * time.Second):
		t.Fatal("not re-registered within 5s")
	}
	// Acknowledged, so committed: the leader (whichever node leads now)
	// holds incarnation 8 once it has applied it.
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		in, ok := cl.Nodes[cl.Leader()].FSM().Instance("orders", "a")
		if !ok || in.Incarnation != 8 {
			return fmt.Errorf("registry holds %+v (found %v), want incarnation 8", in, ok)
		}
		return nil
	})
	if got := reg.Instance().Incarnation; got != 8 {
		t.Errorf("Registration.Instance().Incarnation = %d, want 8", got)
	}
}

func TestWatchDeliversEveryChangeOnceInOrderAcrossANodeFailure(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	watchNode := (leader + 1) % 3
	c := newClient(t, []string{cl.Endpoints()[watchNode], cl.Endpoints()[(leader+2)%3]})
	c.UseEndpoint(cl.Endpoints()[watchNode]) // watch through the node we kill
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	done := make(chan struct{})
	go func() { defer close(done); rec.run(ch) }()
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if len(rec.snapshot()) == 0 {
			return errors.New("no reset yet")
		}
		return nil
	})

	writer := cl.Registry(leader)
	var want []string
	write := func(id string) {
		in := &registryv1.Instance{Service: "orders", Id: id, Address: "h:1", Ttl: nil}
		resp, err := writer.Register(ctx, &registryv1.RegisterRequest{Instance: in})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("registered %s @%d", id, resp.Index))
	}
	for i := range 5 {
		write(fmt.Sprint("before-", i))
	}
	if err := cl.Shutdown(watchNode); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		write(fmt.Sprint("after-", i))
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		got := changes(rec.snapshot())
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d changes so far", len(got), len(want))
		}
		return nil
	})
	cancel()
	<-done
	if diff := cmp.Diff(want, changes(rec.snapshot())); diff != "" {
		t.Errorf("watched changes (-want +got):\n%s", diff)
	}
}

// changes renders the non-reset events.
func changes(evs []client.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type != client.EventReset {
			out = append(out, fmt.Sprintf("%v %s @%d", ev.Type, ev.Instance.ID, ev.Index))
		}
	}
	return out
}

func TestTheCacheAgreesWithALinearizableReadAfterChurn(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx := t.Context()
	if _, err := c.Discover(ctx, "orders"); err != nil { // starts the cache
		t.Fatal(err)
	}
	w := cl.Registry(leader)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				id := fmt.Sprintf("g%d-%d", g, i)
				w.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: id, Address: "h:1"}})
				if i%3 == 0 {
					w.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: id})
				}
			}
		})
	}
	wg.Wait()
	truth, err := c.Discover(ctx, "orders", client.WithConsistency(client.Linearizable))
	if err != nil {
		t.Fatal(err)
	}
	if len(truth) != 4*25-4*9 {
		t.Fatalf("linearizable read: %d instances, want %d", len(truth), 4*25-4*9)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		cached, err := c.Discover(ctx, "orders")
		if err != nil {
			return err
		}
		if diff := cmp.Diff(ids(truth), ids(cached)); diff != "" {
			return fmt.Errorf("cache differs (-linearizable +cached):\n%s", diff)
		}
		return nil
	})
}

// backend is a gRPC server that answers health checks, for the resolver test.
type backend struct {
	addr string
	srv  *grpc.Server
}

func startBackend(t *testing.T) *backend {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &backend{addr: lis.Addr().String(), srv: srv}
}

func TestTheResolverReachesOnlyRegisteredInstances(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	c := newClient(t, cl.Endpoints())
	ctx := t.Context()
	b1, b2 := startBackend(t), startBackend(t)
	r1, err := c.Register(ctx, client.Instance{Service: "echo", ID: "b1", Address: b1.addr}, fast...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, client.Instance{Service: "echo", ID: "b2", Address: b2.addr}, fast...); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("registry:///echo",
		grpc.WithResolvers(c.Resolver()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	reached := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			var p peer.Peer
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
				t.Fatal(err)
			}
			seen[p.Addr.String()]++
		}
		return seen
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if seen := reached(20); len(seen) != 2 {
			return fmt.Errorf("calls reached %v, want both backends", seen)
		}
		return nil
	})
	if err := r1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		seen := reached(20)
		if seen[b1.addr] > 0 || seen[b2.addr] != 20 {
			return fmt.Errorf("after b1 left, calls reached %v; want only %s", seen, b2.addr)
		}
		return nil
	})
}

func TestCloseDeregistersWhatItRegistered(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	c, err := client.New(client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if _, err := c.Register(ctx, instance(id), fast...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Watch(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := cl.Registry(leader).GetService(ctx, &registryv1.GetServiceRequest{Service: "orders", Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE, IncludeSuspect: true})
	if err != nil {
		t.Fatalf("GetService after Close: %v", err)
	}
	if len(got.Instances) != 0 {
		t.Errorf("after Close the registry holds %d instances, want 0", len(got.Instances))
	}
	if _, err := c.Discover(ctx, "orders"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Discover after Close: %v, want ErrClosed", err)
	}
	// TestMain's goleak check proves that Close stopped every goroutine.
}

func TestOneFramePerBeatAndTheAckObserver(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	var (
		mu           sync.Mutex
		frames, acks int
	)
	c, err := client.New(client.Config{
		Endpoints:        cl.Endpoints(),
		MaxBeatsPerFrame: 1,
		OnBeatAck: func(beats int, latency time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			frames++
			acks += beats
			if latency <= 0 {
				t.Errorf("frame latency %v", latency)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := c.Register(t.Context(), instance(id), fast...); err != nil {
			t.Fatal(err)
		}
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if acks < 30 {
			return fmt.Errorf("%d beats acknowledged so far", acks)
		}
		if frames != acks {
			return fmt.Errorf("%d beats in %d frames, want one frame per beat", acks, frames)
		}
		return nil
	})
	if _, err := client.New(client.Config{Endpoints: []string{"x:1"}, MaxBeatsPerFrame: 10_001}); err == nil {
		t.Error("MaxBeatsPerFrame above the server's batch limit was accepted")
	}
}

// A Watch racing Close either fails with ErrClosed or starts a goroutine
// that Close waits for: once Close has returned, every channel a Watch
// returned is closed. (Run under -race: a WaitGroup added to while Close waits on
// it is reported.)
func TestWatchRacingCloseIsWaitedFor(t *testing.T) {
	for range 300 {
		c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		const watchers = 4
		chans := make(chan (<-chan client.Event), watchers)
		var wg sync.WaitGroup
		for range watchers {
			wg.Go(func() {
				ch, err := c.Watch(t.Context(), "orders")
				if err != nil {
					if !errors.Is(err, client.ErrClosed) {
						t.Errorf("Watch: %v, want nil or ErrClosed", err)
					}
					return
				}
				chans <- ch
			})
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(chans)
		for ch := range chans {
			select {
			case _, ok := <-ch:
				if ok {
					t.Fatal("Watch delivered an event from an unreachable endpoint")
				}
			default:
				t.Fatal("a Watch's goroutine still runs after Close returned")
			}
		}
	}
}
