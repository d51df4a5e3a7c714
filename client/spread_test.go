package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

// A client's watches (Watch and the caches behind Discover) start on the
// read endpoints in turn instead of piling on one node; when a node dies,
// its watches move to the others and deliver every change once, in order.
func TestWatchesSpreadOverTheEndpointsAndMoveWhenOneDies(t *testing.T) {
	cl := nodetest.New(t, 3, nil)
	leader := cl.Leader()
	endpoints := cl.Endpoints()
	log := &callLog{calls: map[string][]string{}}
	c, err := client.New(client.Config{
		Endpoints:   endpoints,
		CallTimeout: 2 * time.Second,
		BackoffMax:  200 * time.Millisecond,
		Logger:      nodetest.Logger(t, "client"),
		DialOptions: log.dialOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	perEndpoint := func() map[string]int {
		n := map[string]int{}
		for _, target := range log.targets("Watch") {
			n[target]++
		}
		return n
	}

	const services = 9
	recs := make([]*recorder, services)
	done := make(chan struct{}, services)
	for i := range services {
		ch, err := c.Watch(ctx, fmt.Sprint("svc-", i))
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &recorder{}
		go func() { recs[i].run(ch); done <- struct{}{} }()
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		for i, r := range recs {
			if len(r.snapshot()) == 0 {
				return fmt.Errorf("svc-%d: no reset yet", i)
			}
		}
		return nil
	})
	want := map[string]int{endpoints[0]: 3, endpoints[1]: 3, endpoints[2]: 3}
	if diff := cmp.Diff(want, perEndpoint()); diff != "" {
		t.Errorf("watches per endpoint for %d watched services (-want +got):\n%s", services, diff)
	}
	// They share one WatchMany stream per endpoint.
	streams := map[string]int{}
	for _, target := range log.targets("WatchMany") {
		streams[target]++
	}
	if diff := cmp.Diff(map[string]int{endpoints[0]: 1, endpoints[1]: 1, endpoints[2]: 1}, streams); diff != "" {
		t.Errorf("WatchMany streams per endpoint (-want +got):\n%s", diff)
	}
	// The caches behind Discover take their turns too.
	for i := range 3 {
		if _, err := c.Discover(ctx, fmt.Sprint("cached-", i)); err != nil {
			t.Fatal(err)
		}
	}
	want = map[string]int{endpoints[0]: 4, endpoints[1]: 4, endpoints[2]: 4}
	if diff := cmp.Diff(want, perEndpoint()); diff != "" {
		t.Errorf("watches per endpoint after 3 more cached services (-want +got):\n%s", diff)
	}

	writer := cl.Registry(leader)
	wantChanges := make([][]string, services)
	write := func(i int, id string) {
		t.Helper()
		in := &registryv1.Instance{Service: fmt.Sprint("svc-", i), Id: id, Address: "h:1"}
		resp, err := writer.Register(ctx, &registryv1.RegisterRequest{Instance: in})
		if err != nil {
			t.Fatal(err)
		}
		wantChanges[i] = append(wantChanges[i], fmt.Sprintf("registered %s @%d", id, resp.Index))
	}
	for i := range services {
		write(i, "before")
	}
	if err := cl.Shutdown((leader + 1) % 3); err != nil {
		t.Fatal(err)
	}
	for i := range services {
		write(i, "after")
	}
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		for i, r := range recs {
			if got := changes(r.snapshot()); len(got) < len(wantChanges[i]) {
				return fmt.Errorf("svc-%d: %d of %d changes so far", i, len(got), len(wantChanges[i]))
			}
		}
		return nil
	})
	cancel()
	for range services {
		<-done
	}
	for i, r := range recs {
		if diff := cmp.Diff(wantChanges[i], changes(r.snapshot())); diff != "" {
			t.Errorf("svc-%d: watched changes (-want +got):\n%s", i, diff)
		}
	}
	if dead := endpoints[(leader+1)%3]; perEndpoint()[dead] != 4 {
		t.Errorf("the dead node %s got %d watches, want only its 4 from before", dead, perEndpoint()[dead])
	}
}
