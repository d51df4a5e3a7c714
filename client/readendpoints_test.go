package client_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

// callLog records the node (connection target) each call went to.
type callLog struct {
	mu    sync.Mutex
	calls map[string][]string // method name → targets
}

func (l *callLog) add(method, target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	name := method[strings.LastIndex(method, "/")+1:]
	l.calls[name] = append(l.calls[name], target)
}

func (l *callLog) targets(method string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls[method])
}

func (l *callLog) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			l.add(method, cc.Target())
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			l.add(method, cc.Target())
			s, err := streamer(ctx, desc, cc, method, opts...)
			return &loggedStream{ClientStream: s, log: l, target: cc.Target()}, err
		}),
	}
}

// loggedStream logs each watch created on a WatchMany stream as a call of
// "Watch": a watch started on that target, on its own stream or not.
type loggedStream struct {
	grpc.ClientStream
	log    *callLog
	target string
}

func (s *loggedStream) SendMsg(m any) error {
	if req, ok := m.(*registryv1.WatchManyRequest); ok && req.GetCreate() != nil {
		s.log.add("Watch", s.target)
	}
	return s.ClientStream.SendMsg(m)
}

// With ReadEndpoints set, discovery (the cache's watch stream, Watch and
// Discover's reads) goes to them, and registrations and beats to
// Endpoints.
func TestReadEndpointsServeDiscoveryAndEndpointsTheWrites(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	r := cl.StartReplica(0, nil)
	replica := cl.Nodes[r].GRPCAddr()
	voters := cl.Endpoints()[:3]
	log := &callLog{calls: map[string][]string{}}
	c, err := client.New(client.Config{
		Endpoints:     voters,
		ReadEndpoints: []string{replica},
		CallTimeout:   2 * time.Second,
		BackoffMax:    200 * time.Millisecond,
		Logger:        nodetest.Logger(t, "client"),
		DialOptions:   log.dialOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := t.Context()

	events, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, instance("orders-1"), fast...); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		got, err := c.Discover(ctx, "orders")
		if err != nil {
			return err
		}
		if len(got) != 1 {
			return fmt.Errorf("Discover found %v, want orders-1", ids(got))
		}
		return nil
	})
	timeout := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-events:
			seen = ev.Instance.ID == "orders-1" || slices.ContainsFunc(ev.Instances, func(in client.Instance) bool { return in.ID == "orders-1" })
		case <-timeout:
			t.Fatal("the watch did not show orders-1 within 10s")
		}
	}
	if _, err := c.Discover(ctx, "orders", client.WithConsistency(client.Linearizable)); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if len(log.targets("BeatStream")) == 0 {
			return fmt.Errorf("no beat stream yet; calls %v", log.calls)
		}
		return nil
	})

	for _, tc := range []struct {
		method string
		want   []string
	}{
		{"Watch", []string{replica}},
		{"GetService", []string{replica}},
		{"Register", voters},
		{"BeatStream", voters},
	} {
		got := log.targets(tc.method)
		if len(got) == 0 {
			t.Errorf("no %s call was made", tc.method)
		}
		for _, target := range got {
			if !slices.Contains(tc.want, target) {
				t.Errorf("a %s call went to %s, want one of %v", tc.method, target, tc.want)
			}
		}
	}
}

// When the only read endpoint dies, discovery moves to the voters: a watch
// goes on delivering every change.
func TestAWatchOnADeadReadEndpointMovesToTheVoters(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	cl.Leader()
	r := cl.StartReplica(0, nil)
	c, err := client.New(client.Config{
		Endpoints:     cl.Endpoints()[:3],
		ReadEndpoints: []string{cl.Nodes[r].GRPCAddr()},
		CallTimeout:   2 * time.Second,
		BackoffMax:    200 * time.Millisecond,
		Logger:        nodetest.Logger(t, "client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := t.Context()
	events, err := c.Watch(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(id string) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Instance.ID == id || slices.ContainsFunc(ev.Instances, func(in client.Instance) bool { return in.ID == id }) {
					return
				}
			case <-timeout:
				t.Fatalf("the watch did not show %s within 15s", id)
			}
		}
	}
	if _, err := c.Register(ctx, instance("orders-1"), fast...); err != nil {
		t.Fatal(err)
	}
	waitFor("orders-1")
	if err := cl.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, instance("orders-2"), fast...); err != nil {
		t.Fatal(err)
	}
	waitFor("orders-2")
}
