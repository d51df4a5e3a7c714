package rpc

import (
	"context"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

// eventsState is a fakeState whose history holds events; publish applies
// more of them.
type eventsState struct {
	*fakeState
	events []fsm.Event
}

func (s *eventsState) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *eventsState) EventsAfter(service string, after uint64, _ int) ([]fsm.Event, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fsm.Event
	for _, e := range s.events {
		if e.Index > after && (service == "" || e.Instance.Service == service) {
			out = append(out, e)
		}
	}
	return out, max(after, s.index), nil
}

func (s *eventsState) publish(index uint64, events ...fsm.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, events...)
	s.index = index
	close(s.changed)
	s.changed = make(chan struct{})
}

// received is what a watch message says: its index and service/id of
// each event.
func received(t *testing.T, w registryv1.Registry_WatchClient) []string {
	t.Helper()
	msg, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"index " + strconv.FormatUint(msg.Index, 10)}
	for _, ev := range msg.Events {
		out = append(out, ev.Type.String()+" "+ev.Instance.Service+"/"+ev.Instance.Id)
	}
	return out
}

func TestWatchersOfOneServiceShareOneEncodingOfEachChange(t *testing.T) {
	st := &eventsState{fakeState: &fakeState{index: 5, changed: make(chan struct{})}}
	s, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{}, State: st})
	client := registryv1.NewRegistryClient(cc)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const watchers = 5
	var orders []registryv1.Registry_WatchClient
	for range watchers {
		w, err := client.Watch(ctx, &registryv1.WatchRequest{Service: "orders", AfterIndex: 5})
		if err != nil {
			t.Fatal(err)
		}
		orders = append(orders, w)
	}
	all, err := client.Watch(ctx, &registryv1.WatchRequest{AfterIndex: 5})
	if err != nil {
		t.Fatal(err)
	}

	st.publish(6,
		fsm.Event{Type: fsm.EventRegistered, Index: 6, Instance: fsm.Instance{Service: "orders", ID: "a"}},
		fsm.Event{Type: fsm.EventRegistered, Index: 6, Instance: fsm.Instance{Service: "payments", ID: "p"}})

	want := []string{"index 6", "EVENT_TYPE_REGISTERED orders/a"}
	for i, w := range orders {
		if diff := cmp.Diff(want, received(t, w)); diff != "" {
			t.Errorf("watcher %d of orders (-want +got):\n%s", i, diff)
		}
	}
	// A watch of every service is filtered by its caller, service by
	// service: it gets a message of its own.
	wantAll := []string{"index 6", "EVENT_TYPE_REGISTERED orders/a", "EVENT_TYPE_REGISTERED payments/p"}
	if diff := cmp.Diff(wantAll, received(t, all)); diff != "" {
		t.Errorf("watcher of every service (-want +got):\n%s", diff)
	}
	if n := s.batches.encoded.Load(); n != 1 {
		t.Errorf("%d watchers of orders: the change was encoded %d times, want once", watchers, n)
	}
}
