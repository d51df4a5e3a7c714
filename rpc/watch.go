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
		events, next, err := s.state.EventsAfter(req.Service, after, s.cfg.WatchBatch)
		switch {
		case errors.Is(err, fsm.ErrCompacted):
			if after, err = s.sendReset(stream, req.Service); err != nil {
				return err
			}
			continue
		case err != nil:
			return s.toStatus(err)
		}
		if len(events) > 0 {
			events, next = withinPageBytes(events, next)
			canRead := func(string) bool { return true }
			if aclOn {
				canRead = readFilter(ctx)
			}
			var (
				msg any
				n   int
			)
			if key, ok := shareKey(ctx, req.Service, after, next, canRead); ok {
				// Every watch of this one service that may read it sends
				// the same message: encode it once on this node.
				msg, n, err = s.batches.get(ctx, key, stream, func() *registryv1.WatchResponse {
					return eventsMessage(events, next, canRead)
				})
				switch {
				case ctx.Err() != nil:
					return nil
				case err != nil:
					return s.toStatus(err)
				}
			} else {
				m := eventsMessage(events, next, canRead)
				msg, n = m, len(m.Events)
			}
			if n == 0 { // none this token may read
				after = next
				continue
			}
			if err := stream.SendMsg(msg); err != nil {
				return err
			}
			s.metrics.watchEvents.Add(float64(n))
			after = next
			continue
		}
		after = max(after, next)
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-s.done:
			return s.toStatus(ErrShuttingDown)
		}
	}
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
// (after, next], on streams whose messages are compressed with compressor
// ("" or "identity": none). A service's events are fixed once applied, so
// every watch that asks for the same key sends the same bytes.
type batchKey struct {
	service     string
	compressor  string
	after, next uint64
}

// shareKey returns the key under which a watch's message may be shared:
// only a watch of one service (a watch of every service is filtered by
// its token, service by service) whose caller may read that service, on
// a stream whose send compressor is known.
func shareKey(ctx context.Context, service string, after, next uint64, canRead func(string) bool) (batchKey, bool) {
	if service == "" || !canRead(service) {
		return batchKey{}, false
	}
	ts, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ SendCompress() string })
	if !ok {
		return batchKey{}, false
	}
	return batchKey{service: service, compressor: ts.SendCompress(), after: after, next: next}, true
}

// sharedBatches holds the last few event messages the node's watches
// sent, each encoded once (a grpc.PreparedMsg) by the first watch that
// needed it while the others wait for it: with thousands of watchers of
// one service, a change costs one conversion and one encoding on the
// node, not one per watcher. It is bounded (a ring of batchRing entries);
// a watch whose message has left the ring just encodes it again. The
// zero value is ready to use.
type sharedBatches struct {
	mu      sync.Mutex
	ring    [batchRing]*sharedBatch
	pos     int
	encoded atomic.Int64 // messages encoded, for tests
}

// batchRing is how many recent messages sharedBatches keeps.
const batchRing = 64

type sharedBatch struct {
	key    batchKey
	ready  chan struct{} // closed once msg, events and err are set
	msg    *grpc.PreparedMsg
	events int
	err    error
}

// get returns the encoded message of key and how many events it holds,
// encoding build's message on stream if no other watch has.
func (b *sharedBatches) get(ctx context.Context, key batchKey, stream grpc.ServerStream, build func() *registryv1.WatchResponse) (*grpc.PreparedMsg, int, error) {
	b.mu.Lock()
	for _, e := range b.ring {
		if e != nil && e.key == key {
			b.mu.Unlock()
			select {
			case <-e.ready:
				return e.msg, e.events, e.err
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		}
	}
	e := &sharedBatch{key: key, ready: make(chan struct{})}
	slot := b.pos
	b.ring[slot] = e
	b.pos = (b.pos + 1) % batchRing
	b.mu.Unlock()

	defer close(e.ready)
	m := build()
	e.events = len(m.Events)
	e.msg = new(grpc.PreparedMsg)
	if e.err = e.msg.Encode(stream, m); e.err != nil {
		// The watches waiting now fail with it; the next ones try again.
		b.mu.Lock()
		if b.ring[slot] == e {
			b.ring[slot] = nil
		}
		b.mu.Unlock()
		return nil, 0, e.err
	}
	b.encoded.Add(1)
	return e.msg, e.events, nil
}

// sendReset sends the whole current set of the service(s), in messages of
// at most WatchBatch instances, and returns the index it reflects.
func (s *Server) sendReset(stream grpc.ServerStreamingServer[registryv1.WatchResponse], service string) (uint64, error) {
	ins, index := s.state.Reset(service)
	canRead := readFilter(stream.Context())
	ins = slices.DeleteFunc(ins, func(in fsm.Instance) bool { return !canRead(in.Service) })
	s.metrics.watchResets.Inc()
	api := toAPIInstances(ins, true)
	for first := true; first || len(api) > 0; first = false {
		n := prefixWithin(len(api), s.cfg.WatchBatch, func(i int) int { return proto.Size(api[i]) })
		msg := &registryv1.WatchResponse{IsReset: first, Instances: api[:n], Index: index, More: n < len(api)}
		api = api[n:]
		if err := stream.Send(msg); err != nil {
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
