package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

// limitedNode is a fake node that answers the first `limited` Registers
// and the first `limitedStreams` BeatStreams with RESOURCE_EXHAUSTED and a RetryInfo of `delay`, as a
// node does to a client over its write rate, and records when each call
// arrived.
type limitedNode struct {
	registryv1.UnimplementedRegistryServer
	delay          time.Duration
	limited        int
	limitedStreams int
	addr           string

	mu        sync.Mutex
	registers []time.Time
	streams   []time.Time
}

func (f *limitedNode) exhausted() error {
	st, err := status.New(codes.ResourceExhausted, "client 127.0.0.1 is over its write rate").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(f.delay)})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (f *limitedNode) Register(context.Context, *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers = append(f.registers, time.Now())
	if len(f.registers) <= f.limited {
		return nil, f.exhausted()
	}
	return &registryv1.RegisterResponse{Index: 1}, nil
}

func (f *limitedNode) BeatStream(st grpc.BidiStreamingServer[registryv1.BeatRequest, registryv1.BeatResponse]) error {
	f.mu.Lock()
	f.streams = append(f.streams, time.Now())
	n := len(f.streams)
	f.mu.Unlock()
	if n <= f.limitedStreams {
		if _, err := st.Recv(); err != nil {
			return err
		}
		return f.exhausted()
	}
	<-st.Context().Done() // a stream the client keeps open
	return nil
}

func (f *limitedNode) calls() (registers, streams []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.registers...), append([]time.Time(nil), f.streams...)
}

func startLimitedNode(t *testing.T, delay time.Duration, limited int) *limitedNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &limitedNode{delay: delay, limited: limited, addr: lis.Addr().String()}
	srv := grpc.NewServer()
	registryv1.RegisterRegistryServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f
}

// newLimitedClient is a client of two fake nodes, using the first, whose
// normal backoff (at most 10 ms) is far below the nodes' retry delay.
func newLimitedClient(t *testing.T, first, other *limitedNode) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Endpoints:   []string{first.addr, other.addr},
		CallTimeout: 2 * time.Second,
		BackoffBase: time.Millisecond,
		BackoffMax:  10 * time.Millisecond,
		Logger:      nodetest.Logger(t, "client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.UseEndpoint(first.addr)
	t.Cleanup(func() { c.Close() })
	return c
}

// A write refused for the client's rate is retried on the same node once
// the delay the node asked for has passed, not after the normal backoff
// and not on another node. (The gap is a lower bound the client
// guarantees, not a measure of speed.)
func TestWriteWaitsTheRetryDelayOfARateLimit(t *testing.T) {
	const delay = 400 * time.Millisecond
	a, b := startLimitedNode(t, delay, 1), startLimitedNode(t, delay, 0)
	c := newLimitedClient(t, a, b)
	if _, err := c.Register(t.Context(), instance("o1"), client.WithBeatInterval(time.Hour), client.WithTTL(3*time.Hour)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	got, _ := a.calls()
	if len(got) != 2 {
		t.Fatalf("the limiting node saw %d Registers, want 2 (refused, then retried there)", len(got))
	}
	if gap := got[1].Sub(got[0]); gap < delay {
		t.Errorf("retried after %v, before the %v the node asked for", gap, delay)
	}
	if other, _ := b.calls(); len(other) != 0 {
		t.Errorf("the other node saw %d Registers; a rate-limited write stays on its node", len(other))
	}
}

// The wait is bounded by the caller's context.
func TestRetryDelayIsBoundedByTheContext(t *testing.T) {
	a, b := startLimitedNode(t, time.Hour, 100), startLimitedNode(t, time.Hour, 0)
	c := newLimitedClient(t, a, b)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Register(ctx, instance("o1"), client.WithBeatInterval(time.Hour), client.WithTTL(3*time.Hour))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Register during an hour's retry delay: %v, want the context's deadline", err)
	}
	if got, _ := a.calls(); len(got) != 1 {
		t.Errorf("the limiting node saw %d Registers, want 1", len(got))
	}
}

// A beat stream ended for the client's rate is reopened on the same node
// once the delay has passed.
func TestBeatStreamWaitsTheRetryDelayOfARateLimit(t *testing.T) {
	const delay = 400 * time.Millisecond
	a, b := startLimitedNode(t, delay, 0), startLimitedNode(t, delay, 0)
	a.limitedStreams = 1 // Registers pass; the first stream is refused
	c := newLimitedClient(t, a, b)
	reg, err := c.Register(t.Context(), instance("o1"), fast...)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	defer reg.Deregister(context.Background())
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if _, streams := a.calls(); len(streams) < 2 {
			return errors.New("the beat stream has not been reopened")
		}
		return nil
	})
	_, streams := a.calls()
	if gap := streams[1].Sub(streams[0]); gap < delay {
		t.Errorf("reopened after %v, before the %v the node asked for", gap, delay)
	}
	if _, other := b.calls(); len(other) != 0 {
		t.Errorf("the other node saw %d beat streams; a rate-limited stream stays on its node", len(other))
	}
}
