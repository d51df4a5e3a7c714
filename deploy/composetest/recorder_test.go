package composetest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regcenter/registry/client"
)

// key names an instance.
type key struct{ service, id string }

func (k key) String() string { return k.service + "/" + k.id }

func keyOf(in client.Instance) key { return key{in.Service, in.ID} }

// tlog is an io.Writer for slog that writes one test log line per record.
type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("client", name)
}

// entry is one event the recorder received, or one reset with what it
// removed from the recorder's view unseen.
type entry struct {
	ev       client.Event
	at       time.Time
	vanished []key // for a reset: in the view before it, not in it
}

// recorder follows every service with client.Watch, keeps the view the
// events build and records every event. It is safe for concurrent use.
type recorder struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every message
	index   uint64
	view    map[key]client.Instance
	entries []entry
}

// newRecorder starts watching every service through a client of its own
// with the given endpoints and TLS files; a t.Cleanup stops it.
func newRecorder(t *testing.T, endpoints []string, files tlsFiles) *recorder {
	t.Helper()
	c, err := client.New(client.Config{
		Endpoints: endpoints,
		CAFile:    files.ca, CertFile: files.cert, KeyFile: files.key,
		Token:  files.token,
		Logger: testLogger(t, "watch"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, err := c.Watch(ctx, "")
	if err != nil {
		cancel()
		c.Close()
		t.Fatal(err)
	}
	r := &recorder{c: c, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}), view: make(map[key]client.Instance)}
	go func() {
		defer close(r.done)
		for ev := range events {
			r.apply(ev)
		}
	}()
	t.Cleanup(func() {
		r.cancel()
		<-r.done
		r.c.Close()
	})
	return r
}

func (r *recorder) apply(ev client.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index = max(r.index, ev.Index)
	defer func() {
		close(r.changed)
		r.changed = make(chan struct{})
	}()
	if ev.Type != client.EventReset && ev.Instance.Service == markerService {
		return // a barrier, see project.barrier
	}
	e := entry{ev: ev, at: time.Now()}
	switch ev.Type {
	case client.EventReset:
		next := make(map[key]client.Instance, len(ev.Instances))
		for _, in := range ev.Instances {
			if in.Service != markerService {
				next[keyOf(in)] = in
			}
		}
		for k := range r.view {
			if _, ok := next[k]; !ok {
				e.vanished = append(e.vanished, k)
			}
		}
		r.view = next
	case client.EventDeregistered, client.EventExpired:
		delete(r.view, keyOf(ev.Instance))
	default:
		r.view[keyOf(ev.Instance)] = ev.Instance
	}
	r.entries = append(r.entries, e)
}

// mark returns the position of the next entry.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// since returns the entries from mark on.
func (r *recorder) since(mark int) []entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries[mark:])
}

// waitIndex waits until the recorder has received everything up to index:
// an event at index or above. Plain beats are not events, so index should
// be a barrier's (project.barrier).
func (r *recorder) waitIndex(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		got, changed := r.index, r.changed
		r.mu.Unlock()
		if got >= index {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("the watch reached index %d, want %d: %w", got, index, ctx.Err())
		}
	}
}

// viewKeys returns the instances of the recorder's view.
func (r *recorder) viewKeys() map[key]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[key]bool, len(r.view))
	for k := range r.view {
		out[k] = true
	}
	return out
}

// regEvent is one event of one registration of the fleet.
type regEvent struct {
	key key
	ev  client.RegistrationEvent
}

// fleet is the registered instances: several clients, each keeping its
// share alive on its own beat stream.
type fleet struct {
	clients []*client.Client
	keys    []key
	// current is the incarnation of each instance as the last settle read
	// it; a change means the client had to register it again.
	current map[key]uint64
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu     sync.Mutex
	events []regEvent
}

// fleetSpec says what to register.
type fleetSpec struct {
	clients, perClient, services int
	interval, ttl                time.Duration
}

// newFleet registers spec.clients × spec.perClient instances over
// spec.services services, through clients of their own with the given
// endpoints and TLS files, and drains every registration's events. A
// t.Cleanup closes the clients (leaving the registrations: the cluster is
// thrown away).
func newFleet(t *testing.T, endpoints []string, files tlsFiles, spec fleetSpec) *fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{current: make(map[key]uint64), cancel: cancel}
	t.Cleanup(func() {
		for _, c := range f.clients {
			c.Close()
		}
		f.cancel()
		f.wg.Wait()
	})
	for i := range spec.clients {
		c, err := client.New(client.Config{
			Endpoints:                endpoints,
			CAFile:                   files.ca,
			CertFile:                 files.cert,
			KeyFile:                  files.key,
			Token:                    files.token,
			Logger:                   testLogger(t, fmt.Sprintf("c%d", i)),
			KeepRegistrationsOnClose: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		f.clients = append(f.clients, c)
	}
	type result struct {
		k   key
		reg *client.Registration
		err error
	}
	results := make(chan result)
	for ci, c := range f.clients {
		go func() {
			for j := range spec.perClient {
				n := ci*spec.perClient + j
				k := key{fmt.Sprintf("svc-%d", n%spec.services), fmt.Sprintf("inst-%03d", n)}
				rctx, rcancel := context.WithTimeout(ctx, time.Minute)
				reg, err := c.Register(rctx, client.Instance{
					Service:  k.service,
					ID:       k.id,
					Address:  fmt.Sprintf("10.1.%d.%d:8080", ci, j),
					Metadata: map[string]string{"client": fmt.Sprint(ci)},
				}, client.WithBeatInterval(spec.interval), client.WithTTL(spec.ttl), client.WithEventBuffer(64))
				rcancel()
				results <- result{k, reg, err}
			}
		}()
	}
	var errs []string
	for range spec.clients * spec.perClient {
		res := <-results
		if res.err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", res.k, res.err))
			continue
		}
		f.keys = append(f.keys, res.k)
		f.current[res.k] = res.reg.Instance().Incarnation
		f.wg.Go(func() { f.drain(ctx, res.k, res.reg) })
	}
	if len(errs) > 0 {
		t.Fatalf("%d registrations failed: %s", len(errs), strings.Join(errs, "; "))
	}
	return f
}

func (f *fleet) drain(ctx context.Context, k key, reg *client.Registration) {
	for {
		select {
		case ev, ok := <-reg.Events():
			if !ok {
				return
			}
			f.mu.Lock()
			f.events = append(f.events, regEvent{k, ev})
			f.mu.Unlock()
		case <-ctx.Done():
			return
		}
	}
}

func (f *fleet) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

func (f *fleet) since(mark int) []regEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events[mark:])
}

// clientsOn returns how many of the fleet's clients talk to n now.
func (f *fleet) clientsOn(n *node) int {
	count := 0
	for _, c := range f.clients {
		if c.Endpoint() == n.grpc {
			count++
		}
	}
	return count
}
