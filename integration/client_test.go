package integration_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/regcenter/registry/internal/poll"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/integration/harness"
)

func endpoints(nodes []*harness.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.GRPCAddr()
	}
	return out
}

// clientOn returns a client whose beat stream and calls start on node
// want (clients start at a random endpoint: make new ones until one does).
func clientOn(t *testing.T, eps []string, want string) *client.Client {
	t.Helper()
	for range 100 {
		c, err := client.New(client.Config{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		if c.Endpoint() == want {
			t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
	}
	t.Fatalf("no client started on %s in 100 tries", want)
	return nil
}

func linearizable(ctx context.Context, n *harness.Node, service string) (*registryv1.GetServiceResponse, error) {
	return n.RegistryClient().GetService(ctx, &registryv1.GetServiceRequest{
		Service: service, Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE, IncludeSuspect: true,
	})
}

// Acceptance (issue 4): a client connected to one node keeps its instance
// HEALTHY while that node is SIGKILLed — here the leader, the harder case.
func TestAClientKeepsItsInstanceHealthyWhileItsNodeIsKilled(t *testing.T) {
	cl := harness.Start(t, harness.Options{})
	ctx := t.Context()
	leader, err := cl.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := clientOn(t, endpoints(cl.Nodes()), leader.GRPCAddr())
	reg, err := c.Register(ctx, client.Instance{Service: "orders", ID: "o1", Address: "127.0.0.1:80"},
		client.WithBeatInterval(500*time.Millisecond), client.WithTTL(2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	watcher := cl.Followers()[0]
	rec := harness.NewEventRecorder(t, []*harness.Node{watcher}, t.Logf)

	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	survivors := slices.DeleteFunc(cl.Nodes(), func(n *harness.Node) bool { return n == leader })
	newLeader, err := cl.WaitLeaderAmong(ctx, survivors...)
	if err != nil {
		t.Fatal(err)
	}
	// Let two TTLs pass under the new leader while the client beats.
	time.Sleep(5 * time.Second)
	resp, err := linearizable(ctx, newLeader, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Instances) != 1 || resp.Instances[0].State != registryv1.InstanceState_INSTANCE_STATE_HEALTHY {
		t.Fatalf("after the kill: %v; want orders/o1 HEALTHY", resp.Instances)
	}
	for _, typ := range []registryv1.EventType{registryv1.EventType_EVENT_TYPE_SUSPECT, registryv1.EventType_EVENT_TYPE_EXPIRED} {
		if evs := rec.EventsOf(typ, "orders"); len(evs) > 0 {
			t.Errorf("%d %v events for an instance whose client kept beating", len(evs), typ)
		}
	}
	if c.Endpoint() == leader.GRPCAddr() {
		t.Error("the client still names the killed node as its endpoint")
	}
	// The client saw what the registry saw: registered, then never lost
	// (and so never re-registered).
	var got []client.RegistrationEventType
	for drained := false; !drained; {
		select {
		case ev := <-reg.Events():
			got = append(got, ev.Type)
		default:
			drained = true
		}
	}
	if len(got) == 0 || got[0] != client.Registered {
		t.Errorf("registration events %v; want registered first", got)
	}
	for _, typ := range []client.RegistrationEventType{client.Lost, client.Reregistered} {
		if slices.Contains(got, typ) {
			t.Errorf("registration events %v; want no %v while the client kept beating", got, typ)
		}
	}
}

// proxy forwards TCP connections to a target until cut.
type proxy struct {
	lis    net.Listener
	target string

	mu        sync.Mutex
	cut       bool
	conns     []net.Conn
	firstSeen time.Time // first connection accepted since the last restore
	wg        sync.WaitGroup
}

func newProxy(t *testing.T, ip, target string) *proxy {
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		lis.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve() {
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		if p.firstSeen.IsZero() {
			p.firstSeen = time.Now()
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(out, in); out.Close() })
		p.wg.Go(func() { io.Copy(in, out); in.Close() })
	}
}

// setCut cuts (closing every open connection and refusing new ones) or
// restores the proxy.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	} else {
		p.firstSeen = time.Time{}
	}
}

func (p *proxy) reachedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstSeen
}

// Acceptance (issue 4): an instance expired by the cluster is back, with a
// higher incarnation, within 2 beat intervals of the client reaching the
// cluster again.
func TestAnExpiredInstanceIsBackWithinTwoIntervalsOfReachingTheClusterAgain(t *testing.T) {
	cl := harness.Start(t, harness.Options{})
	ctx := t.Context()
	leader, err := cl.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var proxies []*proxy
	var eps []string
	for _, n := range cl.Nodes() {
		p := newProxy(t, cl.IP(), n.GRPCAddr())
		proxies = append(proxies, p)
		eps = append(eps, p.lis.Addr().String())
	}
	const interval = 400 * time.Millisecond
	c, err := client.New(client.Config{Endpoints: eps, BackoffMax: 300 * time.Millisecond, KeepaliveTime: 5 * time.Second, KeepaliveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg, err := c.Register(ctx, client.Instance{Service: "orders", ID: "o1", Address: "127.0.0.1:80"},
		client.WithBeatInterval(interval), client.WithTTL(3*interval), client.WithIncarnation(5))
	if err != nil {
		t.Fatal(err)
	}

	// Cut the client off until the cluster expires the instance.
	for _, p := range proxies {
		p.setCut(true)
	}
	poll.Eventually(t, 15*time.Second, func(ctx context.Context) error {
		resp, err := linearizable(ctx, leader, "orders")
		if err != nil {
			return err
		}
		if len(resp.Instances) != 0 {
			return fmt.Errorf("still registered: %v", resp.Instances)
		}
		return nil
	})
	for _, p := range proxies {
		p.setCut(false)
	}
	var back time.Time
	poll.Eventually(t, 15*time.Second, func(ctx context.Context) error {
		resp, err := linearizable(ctx, leader, "orders")
		if err != nil {
			return err
		}
		if len(resp.Instances) != 1 || resp.Instances[0].Incarnation <= 5 {
			return fmt.Errorf("not back with a higher incarnation yet: %v", resp.Instances)
		}
		back = time.Now()
		return nil
	})
	var reached time.Time
	for _, p := range proxies {
		if at := p.reachedAt(); !at.IsZero() && (reached.IsZero() || at.Before(reached)) {
			reached = at
		}
	}
	took := back.Sub(reached)
	t.Logf("re-registered %v after the client reached the cluster again (bound: 2 intervals = %v)", took, 2*interval)
	if took > 2*interval {
		t.Errorf("back %v after reaching the cluster again, want within 2 beat intervals (%v)", took, 2*interval)
	}
	var types []client.RegistrationEventType
	for len(types) < 4 {
		select {
		case ev := <-reg.Events():
			types = append(types, ev.Type)
		case <-time.After(5 * time.Second):
			t.Fatalf("registration events so far %v", types)
		}
		if slices.Contains(types, client.Reregistered) {
			break
		}
	}
	if !slices.Contains(types, client.Lost) || !slices.Contains(types, client.Reregistered) {
		t.Errorf("registration events %v, want lost then reregistered", types)
	}
}

// Acceptance (issue 4): Watch delivers every change exactly once, in order,
// across a node kill.
func TestWatchDeliversEveryChangeExactlyOnceAcrossANodeKill(t *testing.T) {
	cl := harness.Start(t, harness.Options{})
	ctx := t.Context()
	leader, err := cl.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	watched := cl.Followers()[0]
	c := clientOn(t, endpoints(cl.Nodes()), watched.GRPCAddr())
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Watch(wctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			mu.Lock()
			if ev.Type == client.EventReset {
				got = append(got, fmt.Sprintf("reset @%d (%d instances)", ev.Index, len(ev.Instances)))
			} else {
				got = append(got, fmt.Sprintf("%v %s @%d", ev.Type, ev.Instance.ID, ev.Index))
			}
			mu.Unlock()
		}
	}()
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return errors.New("no initial reset yet")
		}
		return nil
	})
	mu.Lock()
	want := []string{got[0]}
	mu.Unlock()

	w := leader.RegistryClient()
	write := func(i int) {
		id := fmt.Sprintf("i%03d", i)
		resp, err := w.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: id, Address: "h:1", Incarnation: 1}})
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want = append(want, fmt.Sprintf("registered %s @%d", id, resp.Index))
	}
	for i := range 50 {
		write(i)
		if i == 20 {
			if err := watched.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	poll.Eventually(t, 15*time.Second, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d so far", len(got), len(want))
		}
		return nil
	})
	cancel()
	<-done
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("watched (-want +got):\n%s", diff)
	}
}
