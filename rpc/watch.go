package rpc

import (
	"errors"
	"slices"

	"google.golang.org/grpc"

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
		n := min(len(api), s.cfg.WatchBatch)
		msg := &registryv1.WatchResponse{IsReset: first, Instances: api[:n], Index: index, More: n < len(api)}
		api = api[n:]
		if err := stream.Send(msg); err != nil {
			return 0, err
		}
	}
	return index, nil
}
