package rpc

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/validate"
)

// Watch implements registry.v1.Registry. It is served from the local
// replica. It starts with a reset when after_index is zero or older than
// the events the node keeps; it sends a reset again, never a silent gap,
// whenever the watcher falls so far behind that the events it has not read
// were dropped from the bounded history. With ACLs, a watch of every
// service sees only the services its token may read.
func (s *Server) Watch(req *registryv1.WatchRequest, stream grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	if err := validate.Service("service", req.Service, true); err != nil {
		return s.toStatus(err)
	}
	release, err := s.admitWatch(stream.Context())
	if err != nil {
		return s.toStatus(err)
	}
	defer release()
	select {
	case s.watchers <- struct{}{}:
		s.metrics.watchers.Inc()
		defer func() { <-s.watchers; s.metrics.watchers.Dec() }()
	default:
		return s.toStatus(ErrTooManyWatchers)
	}
	ctx := stream.Context()
	// Without ACLs a call carries no caller: nothing to check again before
	// each message, and every event may be read.
	_, aclOn := ctx.Value(callerKey{}).(*caller)
	after := req.AfterIndex
	if after == 0 {
		var err error
		if after, err = s.sendReset(stream, req.Service); err != nil {
			return err
		}
	}
	for {
		changed := s.state.Changed() // before reading: no lost wake-up
		if aclOn {
			if err := stillAuthenticated(ctx); err != nil { // a deleted token ends the watch
				return s.toStatus(err)
			}
		}
		b, err := s.nextBatch(ctx, req.Service, after)
		switch {
		case errors.Is(err, fsm.ErrCompacted):
			if after, err = s.sendReset(stream, req.Service); err != nil {
				return err
			}
			continue
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return s.toStatus(err)
		}
		if b.events > 0 {
			if err := stream.SendMsg(b.watchResponse()); err != nil {
				return err
			}
			s.metrics.watchEvents.Add(float64(b.events))
		}
		if b.next > after {
			after = b.next
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-s.done:
			return s.toStatus(ErrShuttingDown)
		}
	}
}

// batch is the next message of a watch: the events of its service(s) after
// its index that its caller may read, encoded (raw, the wire form of a
// WatchResponse), and the index it is at once it has sent them (or, with
// no events, once it has skipped the entries that had none for it).
type batch struct {
	raw    []byte
	events int
	next   uint64
}

// watchResponse is b as a WatchResponse that encodes to b.raw: the
// encoded fields travel as the message's unknown fields, copied as they
// are, so that no watch encodes the events again.
func (b batch) watchResponse() *registryv1.WatchResponse {
	m := new(registryv1.WatchResponse)
	m.ProtoReflect().SetUnknown(b.raw)
	return m
}

// nextBatch returns the next message of a watch of service ("": every
// service) at index after, for the caller of ctx. fsm.ErrCompacted: the
// events after it are gone, the watch needs a reset. Every watch of one
// service at one index whose caller may read that service shares one
// encoding of the message (s.batches); a watch of every service is
// filtered by its caller, service by service, and encodes its own.
func (s *Server) nextBatch(ctx context.Context, service string, after uint64) (batch, error) {
	events, next, err := s.state.EventsAfter(service, after, s.cfg.WatchBatch)
	if err != nil {
		return batch{}, err
	}
	if len(events) == 0 {
		return batch{next: max(after, next)}, nil
	}
	events, next = withinPageBytes(events, next)
	canRead := readFilter(ctx)
	if service == "" || !canRead(service) {
		return encodeBatch(events, next, canRead)
	}
	return s.batches.get(ctx, batchKey{service: service, after: after, next: next}, func() (batch, error) {
		return encodeBatch(events, next, canRead)
	})
}

// encodeBatch encodes the watch message of events (the batch ending at
// next) that canRead lets through.
func encodeBatch(events []fsm.Event, next uint64, canRead func(service string) bool) (batch, error) {
	m := eventsMessage(events, next, canRead)
	if len(m.Events) == 0 {
		return batch{next: next}, nil
	}
	raw, err := proto.Marshal(m)
	return batch{raw: raw, events: len(m.Events), next: next}, err
}

// eventsMessage is the watch message of events (the batch ending at next)
// that canRead lets through.
func eventsMessage(events []fsm.Event, next uint64, canRead func(service string) bool) *registryv1.WatchResponse {
	msg := &registryv1.WatchResponse{Index: next, Events: make([]*registryv1.Event, 0, len(events))}
	for i := range events {
		if canRead(events[i].Instance.Service) {
			msg.Events = append(msg.Events, toAPIEvent(&events[i]))
		}
	}
	return msg
}

// batchKey names one message of events: those of service with an index in
// (after, next]. A service's events are fixed once applied, so every watch
// that asks for the same key sends the same bytes.
type batchKey struct {
	service     string
	after, next uint64
}

// sharedBatches holds the last few event messages the node's watches
// (Watch streams and WatchMany watches alike) sent, each encoded once by
// the first watch that needed it while the others wait for it: with
// thousands of watchers of one service, a change costs one conversion and
// one encoding on the node, not one per watcher. It is bounded (a ring of
// batchRing entries); a watch whose message has left the ring just
// encodes it again. The zero value is ready to use.
type sharedBatches struct {
	mu      sync.Mutex
	ring    [batchRing]*sharedBatch
	pos     int
	encoded atomic.Int64 // messages encoded, for tests
}

// batchRing is how many recent messages sharedBatches keeps.
const batchRing = 64

type sharedBatch struct {
	key   batchKey
	ready chan struct{} // closed once b and err are set
	b     batch
	err   error
}

// get returns the message of key, built by build if no other watch has.
func (sb *sharedBatches) get(ctx context.Context, key batchKey, build func() (batch, error)) (batch, error) {
	sb.mu.Lock()
	for _, e := range sb.ring {
		if e != nil && e.key == key {
			sb.mu.Unlock()
			select {
			case <-e.ready:
				return e.b, e.err
			case <-ctx.Done():
				return batch{}, ctx.Err()
			}
		}
	}
	e := &sharedBatch{key: key, ready: make(chan struct{})}
	slot := sb.pos
	sb.ring[slot] = e
	sb.pos = (sb.pos + 1) % batchRing
	sb.mu.Unlock()

	defer close(e.ready)
	if e.b, e.err = build(); e.err != nil {
		// The watches waiting now fail with it; the next ones try again.
		sb.mu.Lock()
		if sb.ring[slot] == e {
			sb.ring[slot] = nil
		}
		sb.mu.Unlock()
		return batch{}, e.err
	}
	sb.encoded.Add(1)
	return e.b, nil
}

// sendReset sends the whole current set of the service(s) on a Watch
// stream and returns the index it reflects.
func (s *Server) sendReset(stream grpc.ServerStreamingServer[registryv1.WatchResponse], service string) (uint64, error) {
	return s.reset(stream.Context(), service, stream.Send)
}

// reset passes send the whole current set of the service(s) that the
// caller of ctx may read, in messages of at most WatchBatch instances, and
// returns the index it reflects.
func (s *Server) reset(ctx context.Context, service string, send func(*registryv1.WatchResponse) error) (uint64, error) {
	ins, index := s.state.Reset(service)
	canRead := readFilter(ctx)
	ins = slices.DeleteFunc(ins, func(in fsm.Instance) bool { return !canRead(in.Service) })
	s.metrics.watchResets.Inc()
	api := toAPIInstances(ins, true)
	for first := true; first || len(api) > 0; first = false {
		n := prefixWithin(len(api), s.cfg.WatchBatch, func(i int) int { return proto.Size(api[i]) })
		msg := &registryv1.WatchResponse{IsReset: first, Instances: api[:n], Index: index, More: n < len(api)}
		api = api[n:]
		if err := send(msg); err != nil {
			return 0, err
		}
	}
	return index, nil
}

// prefixWithin returns how many of the first n items (at least one, when
// there are any) go into one message: at most limit of them (0: no count
// limit) and at most validate.MaxPageBytes by size, so that a message fits
// what a gRPC client receives by default.
func prefixWithin(n, limit int, size func(i int) int) int {
	bytes := 0
	for i := range n {
		if i > 0 && (i == limit || bytes+size(i)+8 > validate.MaxPageBytes) {
			return i
		}
		bytes += size(i) + 8 // the field's tag and length
	}
	return n
}

// withinPageBytes cuts events (in index order, the batch ending at next) to
// a prefix of at most validate.MaxPageBytes of instances, cut only between
// two indexes: a message's index covers all its index's events, so a
// watcher resuming after it misses none. The events of one index (one Raft
// entry) always go together, even beyond the bound.
func withinPageBytes(events []fsm.Event, next uint64) ([]fsm.Event, uint64) {
	bytes := 0
	for i := range events {
		bytes += instanceBytes(&events[i].Instance)
		if bytes > validate.MaxPageBytes && i > 0 && events[i].Index != events[i-1].Index {
			return events[:i], events[i-1].Index
		}
	}
	return events, next
}

// instanceBytes estimates an instance's encoded size: its strings, its
// metadata and a fixed allowance for the numbers and timestamps.
func instanceBytes(in *fsm.Instance) int {
	n := len(in.Service) + len(in.ID) + len(in.Address) + 96
	for k, v := range in.Metadata {
		n += len(k) + len(v) + 8
	}
	return n
}
