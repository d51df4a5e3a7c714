package client_test

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
)

// oldNode serves Watch only, as a node from before WatchMany: a reset of
// one instance, then nothing.
type oldNode struct {
	registryv1.UnimplementedRegistryServer
}

func (oldNode) Watch(_ *registryv1.WatchRequest, s grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	if err := s.Send(&registryv1.WatchResponse{IsReset: true, Index: 9,
		Instances: []*registryv1.Instance{{Service: "orders", Id: "a", Address: "h:1"}}}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// A node that does not serve WatchMany still serves the client's
// watches, each on a Watch stream of its own.
func TestWatchFallsBackToWatchStreamsOnANodeWithoutWatchMany(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	registryv1.RegisterRegistryServer(gs, oldNode{})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	c := newClient(t, []string{lis.Addr().String()})
	for _, svc := range []string{"orders", "orders"} { // the second knows the node is old
		ch, err := c.Watch(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			if ev.Type != client.EventReset || ev.Index != 9 || len(ev.Instances) != 1 || ev.Instances[0].ID != "a" {
				t.Errorf("first event from an old node: %+v; want the reset at 9 holding orders/a", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reset from a node without WatchMany within 10s")
		}
	}
}
