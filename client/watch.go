package client

import (
	"context"
	"errors"
	"io"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// update is one step of a followed watch: a complete reset, or events.
type update struct {
	index  uint64
	reset  bool
	full   []Instance // for a reset
	events []Event
}

// follow streams the changes of service ("" for all) from a node of the
// read pool (Config.ReadEndpoints when set, else Endpoints), each follow
// starting on the next node in turn, until ctx ends, resuming after the
// last index it delivered when a stream breaks, on another node if need
// be. Every update is passed to deliver in
// index order, exactly once; when the node no longer holds the events
// after that index, a reset takes their place. deliver returning an error
// ends follow with it.
func (c *Client) follow(ctx context.Context, service string, after uint64, deliver func(update) error) error {
	attempt := 0
	addr := c.watchEndpoint()
	for {
		delivered, err := c.followOnce(ctx, addr, service, &after, deliver)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if delivered {
			attempt = 0
		}
		c.log.Debug("watch stream broke; resuming on another node", "service", service, "after_index", after, "error", err)
		if sleep(ctx, c.backoff(attempt)) != nil {
			return ctx.Err()
		}
		attempt++
		addr = c.watchFailover(addr)
	}
}

// stopError carries deliver's error out of followOnce.
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }

// followOnce follows on addr until the stream breaks: on the endpoint's
// WatchMany stream, shared with the Client's other watches there, or on a
// Watch stream of its own when the endpoint does not serve WatchMany.
func (c *Client) followOnce(ctx context.Context, addr, service string, after *uint64, deliver func(update) error) (bool, error) {
	if !c.muxes.unsupported(addr) {
		delivered, err := c.followMux(ctx, addr, service, after, deliver)
		if !errors.Is(err, errNoWatchMany) {
			return delivered, err
		}
	}
	return c.followWatch(ctx, addr, service, after, deliver)
}

// followWatch follows on a Watch stream of its own.
func (c *Client) followWatch(ctx context.Context, addr, service string, after *uint64, deliver func(update) error) (bool, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := registryv1.NewRegistryClient(cc).Watch(sctx, &registryv1.WatchRequest{Service: service, AfterIndex: *after})
	if err != nil {
		return false, err
	}
	var f follower
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return f.delivered, io.ErrUnexpectedEOF
		}
		if err != nil {
			return f.delivered, err
		}
		if err := f.handle(msg, after, deliver); err != nil {
			return f.delivered, err
		}
	}
}

// follower turns one watch's messages into updates.
type follower struct {
	delivered bool
	pending   *update // a reset spanning several messages
}

// handle passes deliver the update msg completes, if any, and moves after.
func (f *follower) handle(msg *registryv1.WatchResponse, after *uint64, deliver func(update) error) error {
	switch {
	case msg.IsReset:
		f.pending = &update{index: msg.Index, reset: true}
		fallthrough
	case f.pending != nil:
		for _, in := range msg.Instances {
			f.pending.full = append(f.pending.full, fromAPI(in))
		}
		if msg.More {
			return nil
		}
		u := *f.pending
		f.pending = nil
		if err := deliver(u); err != nil {
			return stopError{err}
		}
	default:
		u := update{index: msg.Index, events: make([]Event, 0, len(msg.Events))}
		for _, ev := range msg.Events {
			u.events = append(u.events, Event{
				Type:          EventType(ev.Type),
				Index:         ev.Index,
				Instance:      fromAPI(ev.Instance),
				SinceLastBeat: ev.GetSinceLastBeat().AsDuration(),
			})
		}
		if err := deliver(u); err != nil {
			return stopError{err}
		}
	}
	*after = msg.Index
	f.delivered = true
	return nil
}

// Watch streams the changes of service (every service if empty) until ctx
// ends or the Client closes, then closes the channel. It starts with an
// EventReset holding the current set, then delivers every change exactly
// once, in index order, across node failures; if a node cannot resume
// where the last one stopped, another EventReset replaces the missing
// changes. The Client's watches on one node share one WatchMany stream
// (a Watch stream each on a node that predates it). A consumer that stops
// reading holds that stream back, and with it the Client's other watches
// on that node; the server then sends resets rather than gaps.
func (c *Client) Watch(ctx context.Context, service string) (<-chan Event, error) {
	if service != "" {
		if err := validateService(service); err != nil {
			return nil, err
		}
	}
	// closed is checked and the WaitGroup added to under c.mu, which Close
	// takes to set closed before it waits: a Watch racing Close either
	// starts a goroutine Close waits for or returns ErrClosed, never adds
	// to the WaitGroup Close is already waiting on.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	out := make(chan Event, 64)
	ctx, cancel := context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(out)
		defer cancel()
		stop := context.AfterFunc(c.ctx, cancel) // the Client's Close ends it too
		defer stop()
		send := func(ev Event) error {
			select {
			case out <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		c.follow(ctx, service, 0, func(u update) error {
			if u.reset {
				return send(Event{Type: EventReset, Index: u.index, Instances: u.full})
			}
			for _, ev := range u.events {
				if err := send(ev); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	return out, nil
}
