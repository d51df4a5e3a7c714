package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// Issue 16: every node serves many watches on one WatchMany stream, each
// as a Watch of its service would see it, through real processes: the
// registrations made on the leader reach every watch of every node in
// order, at the same indexes a Watch stream reports, and a canceled watch
// gets nothing more.
func TestWatchManyOnEveryNodeDeliversWhatWatchDelivers(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	leader := waitLeader(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	type node struct {
		stream registryv1.Registry_WatchManyClient
		got    map[uint64][]string // watch id → what it saw
	}
	var nodes []*node
	for _, n := range c.Nodes() {
		s, err := n.RegistryClient().WatchMany(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for id, svc := range []string{"orders", "orders", ""} {
			if err := s.Send(&registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Create{
				Create: &registryv1.WatchCreate{WatchId: uint64(id), Service: svc}}}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, &node{stream: s, got: map[uint64][]string{}})
	}
	old, err := c.Followers()[0].RegistryClient().Watch(ctx, &registryv1.WatchRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}

	var want []string
	register := func(svc, id string) uint64 {
		t.Helper()
		resp, err := leader.RegistryClient().Register(ctx, &registryv1.RegisterRequest{Instance: newInstance(svc, id, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetIndex()
	}
	// recv reads a node's stream until every watch in ids has seen n
	// registrations (resets record nothing).
	recv := func(nd *node, n int, ids ...uint64) {
		t.Helper()
		for {
			done := true
			for _, id := range ids {
				done = done && len(nd.got[id]) >= n
			}
			if done {
				return
			}
			msg, err := nd.stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range msg.WatchIds {
				if msg.Ended != nil {
					nd.got[id] = append(nd.got[id], fmt.Sprintf("ended %d", msg.Ended.Code))
					continue
				}
				for _, ev := range msg.Response.GetEvents() {
					nd.got[id] = append(nd.got[id], fmt.Sprintf("%s %s/%s @%d", ev.Type, ev.Instance.Service, ev.Instance.Id, ev.Index))
				}
			}
		}
	}
	for i := range 3 {
		id := fmt.Sprint("o-", i)
		want = append(want, fmt.Sprintf("EVENT_TYPE_REGISTERED orders/%s @%d", id, register("orders", id)))
	}
	for _, nd := range nodes {
		recv(nd, 3, 0, 1)
		if diff := cmp.Diff(want, nd.got[0]); diff != "" {
			t.Errorf("watch 0 of orders (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, nd.got[1]); diff != "" {
			t.Errorf("watch 1 of orders (-want +got):\n%s", diff)
		}
	}
	var fromWatch []string
	for len(fromWatch) < 3 {
		msg, err := old.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msg.Events {
			fromWatch = append(fromWatch, fmt.Sprintf("%s %s/%s @%d", ev.Type, ev.Instance.Service, ev.Instance.Id, ev.Index))
		}
	}
	if diff := cmp.Diff(want, fromWatch); diff != "" {
		t.Errorf("the Watch stream (-WatchMany +Watch):\n%s", diff)
	}

	// Cancel watch 1 everywhere; then a payments and an orders change.
	for _, nd := range nodes {
		if err := nd.stream.Send(&registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Cancel{
			Cancel: &registryv1.WatchCancel{WatchId: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	pay := fmt.Sprintf("EVENT_TYPE_REGISTERED payments/p @%d", register("payments", "p"))
	last := fmt.Sprintf("EVENT_TYPE_REGISTERED orders/o-3 @%d", register("orders", "o-3"))
	for i, nd := range nodes {
		recv(nd, 4, 0, 1)
		recv(nd, 5, 2) // the watch of every service: the five registrations
		if diff := cmp.Diff(append(want[:3:3], last), nd.got[0]); diff != "" {
			t.Errorf("node %d: watch 0 of orders (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(append(want[:3:3], "ended 0"), nd.got[1]); diff != "" {
			t.Errorf("node %d: the canceled watch 1 (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(append(want[:3:3], pay, last), nd.got[2]); diff != "" {
			t.Errorf("node %d: watch 2 of every service (-want +got):\n%s", i, diff)
		}
	}
}
