package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// RecordedEvent is one event as an EventRecorder received it.
type RecordedEvent struct {
	*registryv1.Event
	// ReceivedAt is the local time (with its monotonic reading) at which
	// the message carrying the event was received.
	ReceivedAt time.Time
	// Node is the node whose watch delivered it.
	Node string
}

// Key is the key of the event's instance.
func (e RecordedEvent) Key() InstanceKey { return KeyOf(e.GetInstance()) }

// RecordedReset is one complete reset as an EventRecorder received it.
type RecordedReset struct {
	Index      uint64
	ReceivedAt time.Time
	Node       string
	// Instances is the size of the set the reset carried.
	Instances int
	// Initial: the first reset of the recorder, which starts its view.
	Initial bool
	// Vanished are the instances of the view before this reset that it
	// does not hold: they were removed (expired or deregistered) by events
	// the recorder never received. Appeared are the reverse.
	Vanished, Appeared []InstanceKey
}

// EventRecorder watches every service from one node and records every
// event with the time it was received. When the watch fails it moves to the
// next node and resumes after the last index it received (after_index); a
// reset, which the registry sends when it no longer keeps the events after
// that index, replaces the recorder's view and is recorded with what it
// changed. It is safe for concurrent use.
//
// A watch on a paused (SIGSTOPped) node does not fail: the recorder waits
// for the node to continue. Prefer a node the test does not pause.
type EventRecorder struct {
	nodes  []*Node
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	logf   func(format string, args ...any)

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	index     uint64        // the last index received with a complete view
	haveView  bool
	view      map[InstanceKey]registryv1.InstanceState
	events    []RecordedEvent
	resets    []RecordedReset
	failovers int
	lastErr   error
	stopped   bool
}

// NewEventRecorder starts watching every service, from nodes[0] first, then
// from the next node after each failure. A t.Cleanup stops it; so may Stop,
// earlier. logf, if not nil, gets one line per failover; it is not called
// after Stop returns. It must be called from the test goroutine.
func NewEventRecorder(t testing.TB, nodes []*Node, logf func(format string, args ...any)) *EventRecorder {
	t.Helper()
	if len(nodes) == 0 {
		t.Fatal("harness: NewEventRecorder needs at least one node")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := newEventRecorder(nodes, logf)
	r.cancel = cancel
	t.Cleanup(r.Stop)
	for _, n := range r.nodes {
		conn, err := n.Dial()
		if err != nil {
			r.Stop()
			t.Fatalf("harness: event recorder: %v", err)
		}
		r.conns = append(r.conns, conn)
	}
	r.wg.Go(func() { r.run(ctx) })
	return r
}

func newEventRecorder(nodes []*Node, logf func(format string, args ...any)) *EventRecorder {
	return &EventRecorder{
		nodes:   slices.Clone(nodes),
		cancel:  func() {},
		logf:    logf,
		changed: make(chan struct{}),
		view:    make(map[InstanceKey]registryv1.InstanceState),
	}
}

// failoverDelay paces the recorder's moves from node to node.
const failoverDelay = 100 * time.Millisecond

func (r *EventRecorder) run(ctx context.Context) {
	for cur := 0; ; cur = (cur + 1) % len(r.nodes) {
		err := r.watch(ctx, cur)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.failovers++
		r.lastErr = err
		after := r.index
		r.mu.Unlock()
		next := r.nodes[(cur+1)%len(r.nodes)]
		if r.logf != nil {
			r.logf("event recorder: watch on %s ended: %v; resuming on %s after index %d", r.nodes[cur], err, next, after)
		}
		timer := time.NewTimer(failoverDelay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// watch runs one Watch on node cur until it fails.
func (r *EventRecorder) watch(ctx context.Context, cur int) error {
	node := r.nodes[cur].ID()
	r.mu.Lock()
	after := r.index
	if !r.haveView {
		after = 0
	}
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := registryv1.NewRegistryClient(r.conns[cur]).Watch(ctx, &registryv1.WatchRequest{AfterIndex: after})
	if err != nil {
		return err
	}
	var pending pendingReset
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("stream ended by the server: %w", err)
			}
			return err
		}
		r.receive(&pending, msg, time.Now(), node)
	}
}

// pendingReset is the reset a stream is receiving, until its last message.
// An unfinished one is dropped with its stream: the recorder's view and
// index stay those before it.
type pendingReset struct {
	view map[InstanceKey]registryv1.InstanceState // nil: none
}

// receive handles one message of a stream, received at at from node.
func (r *EventRecorder) receive(p *pendingReset, msg *registryv1.WatchResponse, at time.Time, node string) {
	switch {
	case msg.GetIsReset():
		p.view = make(map[InstanceKey]registryv1.InstanceState, len(msg.GetInstances()))
		fallthrough
	case p.view != nil:
		for _, in := range msg.GetInstances() {
			p.view[KeyOf(in)] = in.GetState()
		}
		if !msg.GetMore() {
			r.applyReset(p.view, msg.GetIndex(), at, node)
			p.view = nil
		}
	default:
		r.applyEvents(msg, at, node)
	}
}

func (r *EventRecorder) applyReset(view map[InstanceKey]registryv1.InstanceState, index uint64, at time.Time, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rr := RecordedReset{Index: index, ReceivedAt: at, Node: node, Instances: len(view), Initial: !r.haveView}
	if r.haveView {
		for k := range r.view {
			if _, ok := view[k]; !ok {
				rr.Vanished = append(rr.Vanished, k)
			}
		}
		for k := range view {
			if _, ok := r.view[k]; !ok {
				rr.Appeared = append(rr.Appeared, k)
			}
		}
	}
	byName := func(a, b InstanceKey) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(rr.Vanished, byName)
	slices.SortFunc(rr.Appeared, byName)
	r.resets = append(r.resets, rr)
	r.view, r.haveView, r.index = view, true, index
	r.notify()
}

func (r *EventRecorder) applyEvents(msg *registryv1.WatchResponse, at time.Time, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range msg.GetEvents() {
		if ev.GetIndex() <= r.index {
			continue // already received from another node
		}
		r.events = append(r.events, RecordedEvent{Event: ev, ReceivedAt: at, Node: node})
		k := KeyOf(ev.GetInstance())
		switch ev.GetType() {
		case registryv1.EventType_EVENT_TYPE_DEREGISTERED, registryv1.EventType_EVENT_TYPE_EXPIRED:
			delete(r.view, k)
		default:
			r.view[k] = ev.GetInstance().GetState()
		}
	}
	r.index = max(r.index, msg.GetIndex())
	r.notify()
}

// notify wakes WaitIndex; r.mu is held.
func (r *EventRecorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Index is the highest Raft index the recorder has received, with a
// complete view. Watches send nothing for plain beats, so it stays at the
// last event's index while only beats are committed.
func (r *EventRecorder) Index() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.index
}

// WaitIndex waits until the recorder has received everything up to index
// (an index that carries an event, or is followed by one), or ctx ends.
func (r *EventRecorder) WaitIndex(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		got, changed, lastErr := r.index, r.changed, r.lastErr
		r.mu.Unlock()
		if got >= index {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("harness: event recorder at index %d, want %d: %w (last watch error: %v)", got, index, ctx.Err(), lastErr)
		}
	}
}

// Events returns the events received so far, in index order.
func (r *EventRecorder) Events() []RecordedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// EventsOf returns the events of type typ received so far whose instance
// belongs to one of services (any service if none is given).
func (r *EventRecorder) EventsOf(typ registryv1.EventType, services ...string) []RecordedEvent {
	var out []RecordedEvent
	for _, ev := range r.Events() {
		if ev.GetType() == typ && (len(services) == 0 || slices.Contains(services, ev.GetInstance().GetService())) {
			out = append(out, ev)
		}
	}
	return out
}

// Resets returns the complete resets received so far, the initial one
// first.
func (r *EventRecorder) Resets() []RecordedReset {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resets)
}

// View returns the state of every instance as the recorder sees it.
func (r *EventRecorder) View() map[InstanceKey]registryv1.InstanceState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[InstanceKey]registryv1.InstanceState, len(r.view))
	for k, v := range r.view {
		out[k] = v
	}
	return out
}

// Failovers is the number of watches that ended with an error.
func (r *EventRecorder) Failovers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failovers
}

// Stop ends the watch, waits for it and closes the recorder's connections.
// It is idempotent.
func (r *EventRecorder) Stop() {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	stopped := r.stopped
	r.stopped = true
	r.mu.Unlock()
	if !stopped {
		for _, conn := range r.conns {
			conn.Close()
		}
	}
}
