package client

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

func validateService(service string) error {
	if err := validate.Name("service", service); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// cache is the watched view of one service that Discover and the resolver
// answer from. Its goroutine follows the service's watch for the life of
// the Client.
type cache struct {
	service string
	ready   chan struct{} // closed once the first reset is applied

	mu        sync.Mutex
	instances map[string]Instance
	index     uint64
	changed   chan struct{} // closed and replaced when index moves
	subs      map[int]func([]Instance)
	nextSub   int
}

// cacheFor returns the cache of service, starting it on first use.
func (c *Client) cacheFor(service string) (*cache, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if ch, ok := c.caches[service]; ok {
		return ch, nil
	}
	ch := &cache{service: service, ready: make(chan struct{}), changed: make(chan struct{}), instances: map[string]Instance{}, subs: map[int]func([]Instance){}}
	c.caches[service] = ch
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.follow(c.ctx, service, 0, func(u update) error { return c.applyToCache(ch, u) })
	}()
	return ch, nil
}

// applyToCache applies one watch update. A reset that would replace a
// non-empty set with an empty one is first confirmed by the leader: only an
// authoritative answer empties the cache (a node that lost its data, or a
// cluster without a leader, must not make every instance disappear).
func (c *Client) applyToCache(ch *cache, u update) error {
	if u.reset {
		ch.mu.Lock()
		emptying := len(u.full) == 0 && len(ch.instances) > 0
		ch.mu.Unlock()
		if emptying && !c.confirmEmpty(ch.service) {
			c.log.Warn("ignoring an empty reset the leader did not confirm", "service", ch.service, "index", u.index)
			return nil
		}
	}
	ch.mu.Lock()
	if u.reset {
		clear(ch.instances)
		for _, in := range u.full {
			ch.instances[in.ID] = in
		}
	}
	for _, ev := range u.events {
		if ev.Type.isLive() {
			ch.instances[ev.Instance.ID] = ev.Instance
		} else {
			delete(ch.instances, ev.Instance.ID)
		}
	}
	ch.index = max(ch.index, u.index)
	// ready and changed move together under the lock: a Discover that
	// reads one must see the other, or it could wait on a changed channel
	// that no later update closes.
	if !isClosed(ch.ready) {
		close(ch.ready)
	}
	close(ch.changed)
	ch.changed = make(chan struct{})
	healthy := ch.snapshot(false)
	subs := make([]func([]Instance), 0, len(ch.subs))
	for _, fn := range ch.subs {
		subs = append(subs, fn)
	}
	ch.mu.Unlock()
	for _, fn := range subs {
		fn(healthy)
	}
	return nil
}

// confirmEmpty asks the leader whether service really has no instances.
func (c *Client) confirmEmpty(service string) bool {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
	defer cancel()
	var resp *registryv1.GetServiceResponse
	err := c.call(ctx, false, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = registryv1.NewRegistryClient(cc).GetService(ctx, &registryv1.GetServiceRequest{
			Service: service, Consistency: registryv1.Consistency_CONSISTENCY_DEFAULT, IncludeSuspect: true,
		})
		return err
	})
	return err == nil && resp.KnownLeader && len(resp.Instances) == 0
}

// snapshot returns the instances sorted by id. Callers hold mu.
func (ch *cache) snapshot(includeSuspect bool) []Instance {
	out := make([]Instance, 0, len(ch.instances))
	for _, in := range ch.instances {
		if includeSuspect || in.State == Healthy {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// subscribe calls fn with the healthy instances now (if the cache is
// ready) and after every change, until the returned function is called.
func (ch *cache) subscribe(fn func([]Instance)) (unsubscribe func()) {
	ch.mu.Lock()
	id := ch.nextSub
	ch.nextSub++
	ch.subs[id] = fn
	var now []Instance
	ready := false
	select {
	case <-ch.ready:
		ready, now = true, ch.snapshot(false)
	default:
	}
	ch.mu.Unlock()
	if ready {
		fn(now)
	}
	return func() {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		delete(ch.subs, id)
	}
}

// Discover returns the HEALTHY instances of service (SUSPECT ones too with
// WithSuspect()), sorted by id. The first call for a service starts a
// watch and waits for its first answer; later calls answer from the
// watched cache without a round trip. The answer reflects at least this
// client's own writes to the service (read your writes). WithConsistency(Leader or
// Linearizable) reads through the leader instead.
func (c *Client) Discover(ctx context.Context, service string, opts ...DiscoverOption) ([]Instance, error) {
	var o discoverOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := validateService(service); err != nil {
		return nil, err
	}
	if o.consistency != Cached {
		return c.discoverDirect(ctx, service, o)
	}
	ch, err := c.cacheFor(service)
	if err != nil {
		return nil, err
	}
	// Wait for the first answer, and for the cache to reflect this
	// client's own writes to the service.
	want := c.writeIndex(service)
	for {
		ch.mu.Lock()
		changed := ch.changed
		if ch.index >= want && isClosed(ch.ready) {
			defer ch.mu.Unlock()
			return ch.snapshot(o.includeSuspect), nil
		}
		ch.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (c *Client) discoverDirect(ctx context.Context, service string, o discoverOptions) ([]Instance, error) {
	req := &registryv1.GetServiceRequest{Service: service, IncludeSuspect: o.includeSuspect, Consistency: registryv1.Consistency_CONSISTENCY_DEFAULT}
	if o.consistency == Linearizable {
		req.Consistency = registryv1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	var out []Instance
	for {
		var resp *registryv1.GetServiceResponse
		err := c.call(ctx, false, func(ctx context.Context, cc *grpc.ClientConn) error {
			var err error
			resp, err = registryv1.NewRegistryClient(cc).GetService(ctx, req)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, in := range resp.Instances {
			out = append(out, fromAPI(in))
		}
		// A large service comes in pages (each at most 3 MiB).
		if resp.NextPageToken == "" {
			return out, nil
		}
		req.PageToken = resp.NextPageToken
	}
}
