package rpc

import (
	"errors"
	"slices"

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
	after := req.AfterIndex
	if after == 0 {
		var err error
		if after, err = s.sendReset(stream, req.Service); err != nil {
			return err
		}
	}
	for {
		changed := s.state.Changed()                    // before reading: no lost wake-up
		if err := stillAuthenticated(ctx); err != nil { // a deleted token ends the watch
			return s.toStatus(err)
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
			msg := &registryv1.WatchResponse{Index: next, Events: make([]*registryv1.Event, 0, len(events))}
			canRead := readFilter(ctx)
			for i := range events {
				if canRead(events[i].Instance.Service) {
					msg.Events = append(msg.Events, toAPIEvent(&events[i]))
				}
			}
			if len(msg.Events) == 0 { // none this token may read
				after = next
				continue
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			s.metrics.watchEvents.Add(float64(len(msg.Events)))
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
