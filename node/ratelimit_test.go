package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// slowWrites: a burst of two writes per client address, then one every
// 100 s: a third write within the test is refused.
func slowWrites(cfg *node.Config) { cfg.Limits.WriteRate, cfg.Limits.WriteBurst = 0.01, 2 }

func register(ctx context.Context, reg registryv1.RegistryClient, id string) error {
	_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: id, Address: "127.0.0.1:80"}})
	return err
}

func TestWritesBeyondTheClientRateAreResourceExhaustedWithARetryDelay(t *testing.T) {
	c := nodetest.New(t, 1, slowWrites)
	reg := c.Registry(c.Leader())
	ctx := t.Context()
	for i := range 2 {
		if err := register(ctx, reg, fmt.Sprint("o", i)); err != nil {
			t.Fatalf("write %d of the burst: %v", i+1, err)
		}
	}
	_, err := reg.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "o0"}}})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("third write: %v, want ResourceExhausted", err)
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	if delay < 50*time.Second || delay > 100*time.Second {
		t.Errorf("RetryInfo delay %v, want about 100s (one write at 0.01/s)", delay)
	}
}

func TestAForwardedWriteIsCountedOnlyWhereTheClientCalled(t *testing.T) {
	c := nodetest.New(t, 3, slowWrites)
	leader := c.Leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	// The leader must know the follower's address to recognise its
	// forwarded calls.
	poll.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		st, err := registryv1.NewClusterClient(c.Conns[leader]).Status(ctx, &registryv1.StatusRequest{})
		if err != nil {
			return err
		}
		for _, m := range st.GetMembers() {
			if m.GetId() == c.Nodes[follower].ID() && m.GetGrpcAddress() != "" {
				return nil
			}
		}
		return fmt.Errorf("follower's address not published yet")
	})
	// This process's address has spent its burst on the leader...
	for i := range 2 {
		if err := register(ctx, c.Registry(leader), fmt.Sprint("l", i)); err != nil {
			t.Fatal(err)
		}
	}
	// ...but not on the follower, which forwards: the leader must not
	// count the forwarded writes again (nor against the follower).
	for i := range 2 {
		if err := register(ctx, c.Registry(follower), fmt.Sprint("f", i)); err != nil {
			t.Fatalf("write %d through the follower: %v", i+1, err)
		}
	}
}

func TestARateLimitedHTTPWriteIs429WithRetryAfter(t *testing.T) {
	c := nodetest.New(t, 1, func(cfg *node.Config) { slowWrites(cfg); cfg.HTTPAddr = "127.0.0.1:0" })
	c.Leader()
	url := "http://" + c.Nodes[0].HTTPAddr() + "/v1/services/orders/instances/a"
	var resp *http.Response
	for range 3 {
		req, _ := http.NewRequestWithContext(t.Context(), "PUT", url, strings.NewReader(`{"address": "127.0.0.1:80"}`))
		req.Header.Set("Content-Type", "application/json")
		var err error
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third PUT: %d with Retry-After %q, want 429 with a Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestWatchesBeyondTheClientLimitAreRefusedNamingIt(t *testing.T) {
	c := nodetest.New(t, 1, func(cfg *node.Config) { cfg.Limits.MaxWatchesPerClient = 2 })
	reg := c.Registry(c.Leader())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	open := func(ctx context.Context) error {
		w, err := reg.Watch(ctx, &registryv1.WatchRequest{Service: "orders"})
		if err != nil {
			return err
		}
		_, err = w.Recv() // the reset, or the refusal
		return err
	}
	first, cancelFirst := context.WithCancel(ctx)
	if err := open(first); err != nil {
		t.Fatal(err)
	}
	if err := open(ctx); err != nil {
		t.Fatal(err)
	}
	err := open(ctx)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "max-watches-per-client") {
		t.Fatalf("third watch: %v, want ResourceExhausted naming --max-watches-per-client", err)
	}
	cancelFirst()
	poll.Eventually(t, 5*time.Second, func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		return open(ctx)
	})
}
