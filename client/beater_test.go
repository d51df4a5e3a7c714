package client_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

// retryingNode is a node that registers anything and answers the first
// beat frame with a BeatRetry, as a node that could not forward it does,
// and every later frame with a commit. It records each frame's arrival and
// each stream it serves.
type retryingNode struct {
	registryv1.UnimplementedRegistryServer
	mu      sync.Mutex
	streams int
	frames  []time.Time
}

func (n *retryingNode) Register(context.Context, *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	return &registryv1.RegisterResponse{Index: 1}, nil
}

func (n *retryingNode) Deregister(context.Context, *registryv1.DeregisterRequest) (*registryv1.DeregisterResponse, error) {
	return &registryv1.DeregisterResponse{Index: 2}, nil
}

func (n *retryingNode) BeatStream(st grpc.BidiStreamingServer[registryv1.BeatRequest, registryv1.BeatResponse]) error {
	n.mu.Lock()
	n.streams++
	n.mu.Unlock()
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		n.mu.Lock()
		n.frames = append(n.frames, time.Now())
		first := len(n.frames) == 1
		n.mu.Unlock()
		resp := &registryv1.BeatResponse{Seq: req.Seq, Index: 1}
		if first {
			resp = &registryv1.BeatResponse{Seq: req.Seq, Retry: &registryv1.BeatRetry{
				Message: "no leader is known", Outcome: &registryv1.WriteOutcome{}}}
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func TestABeatFrameAnsweredWithRetryIsResentOnTheSameStream(t *testing.T) {
	node := &retryingNode{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	registryv1.RegisterRegistryServer(gs, node)
	go gs.Serve(lis)
	defer gs.Stop()

	c, err := client.New(client.Config{
		Endpoints:   []string{lis.Addr().String()},
		CallTimeout: 2 * time.Second,
		BackoffMax:  100 * time.Millisecond,
		Logger:      nodetest.Logger(t, "client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A beat interval far longer than the backoff: a frame sent again
	// within the backoff is the retry, not the next beat.
	_, err = c.Register(t.Context(), instance("a"),
		client.WithBeatInterval(2*time.Second), client.WithSuspectAfter(5*time.Second), client.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		node.mu.Lock()
		defer node.mu.Unlock()
		if len(node.frames) < 2 {
			return fmt.Errorf("%d frames so far", len(node.frames))
		}
		return nil
	})
	node.mu.Lock()
	defer node.mu.Unlock()
	if gap := node.frames[1].Sub(node.frames[0]); gap > time.Second {
		t.Errorf("the retried frame was sent again after %v; want within the backoff (100ms), before the next beat (2s)", gap)
	}
	if node.streams != 1 {
		t.Errorf("%d beat streams opened; a retried frame must not reopen the stream", node.streams)
	}
}
