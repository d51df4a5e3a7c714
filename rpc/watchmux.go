package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/validate"
)

// ErrTooManyStreamWatches means a WatchMany stream has
// Config.MaxWatchesPerStream watches open. It is a kind of
// ErrTooManyWatchers (RESOURCE_EXHAUSTED).
var ErrTooManyStreamWatches = fmt.Errorf("%w: too many watches on this stream", ErrTooManyWatchers)

// WatchMany implements registry.v1.Registry: many watches on one stream,
// each behaving exactly as a Watch of its service (the same first reset,
// events, reset of a watcher left behind, read checks and limits). The
// stream has two goroutines whatever its watches: this one sends, one
// receives creates and cancels. Watches of one service at one index form
// a group that is served with one read of the history and one message
// naming every watch of the group; the message's events are encoded once
// on the node, shared with every other stream and Watch (s.batches).
// A refused create and a cancel end that watch only, with a WatchEnded; a
// token deleted ends the stream.
func (s *Server) WatchMany(stream grpc.BidiStreamingServer[registryv1.WatchManyRequest, registryv1.WatchManyResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	m := &muxStream{s: s, ctx: ctx, stream: stream, open: map[uint64]bool{},
		groups: map[groupKey][]*muxWatch{}, where: map[uint64]groupKey{}, wake: make(chan struct{}, 1)}
	defer m.releaseAll()
	recvErr := make(chan error, 1)
	if !s.goTracked(func() { recvErr <- m.receive() }) {
		return s.toStatus(ErrShuttingDown)
	}
	_, aclOn := ctx.Value(callerKey{}).(*caller)
	for {
		changed := s.state.Changed() // before reading: no lost wake-up
		if aclOn {
			if err := stillAuthenticated(ctx); err != nil { // a deleted token ends the stream
				return s.toStatus(err)
			}
		}
		if err := m.applyCommands(); err != nil {
			return err
		}
		progressed, err := m.sendRound()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case progressed:
			continue
		}
		select {
		case <-changed:
		case <-m.wake:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil // the client is done
			}
			return err
		case <-ctx.Done():
			return nil
		case <-s.done:
			return s.toStatus(ErrShuttingDown)
		}
	}
}

// muxStream is the state of one WatchMany stream. The receiving goroutine
// checks creates and queues them with cancels (mu, pending, open); the
// sending one owns the groups.
type muxStream struct {
	s      *Server
	ctx    context.Context
	stream grpc.BidiStreamingServer[registryv1.WatchManyRequest, registryv1.WatchManyResponse]
	wake   chan struct{} // a command is pending

	mu      sync.Mutex
	pending []muxCommand
	open    map[uint64]bool // ids created and not yet ended
	closed  bool            // set by releaseAll: nothing is admitted after it

	// Sender only.
	groups map[groupKey][]*muxWatch
	where  map[uint64]groupKey
}

// groupKey is a group of the stream's watches: those of service at index
// after.
type groupKey struct {
	service string
	after   uint64
}

// muxWatch is one admitted watch; release gives back its slots.
type muxWatch struct {
	id      uint64
	service string
	after   uint64 // as created
	release func()
}

// muxCommand is an admitted watch to start, a cancel, or a refusal to
// send (ended set).
type muxCommand struct {
	watch  *muxWatch
	cancel uint64
	ended  *registryv1.WatchManyResponse
}

// receive reads creates and cancels until the stream ends.
func (m *muxStream) receive() error {
	for {
		req, err := m.stream.Recv()
		if err != nil {
			return err
		}
		var c muxCommand
		m.mu.Lock() // admitted and queued at once: releaseAll frees either
		switch r := req.Request.(type) {
		case *registryv1.WatchManyRequest_Create:
			w, err := m.admit(r.Create)
			if err != nil {
				c.ended = endedMessage(r.Create.WatchId, m.s.toStatus(err))
			} else {
				c.watch = w
			}
		case *registryv1.WatchManyRequest_Cancel:
			c.cancel = r.Cancel.WatchId
		default: // neither: nothing to do
			m.mu.Unlock()
			continue
		}
		m.pending = append(m.pending, c)
		m.mu.Unlock()
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// admit checks a create as Watch checks its request and takes the watch's
// slots: one of the stream's, the node's and the client's. m.mu is held.
func (m *muxStream) admit(c *registryv1.WatchCreate) (*muxWatch, error) {
	s := m.s
	if err := validate.Service("service", c.Service, true); err != nil {
		return nil, err
	}
	if id, on, err := identityFrom(m.ctx); on {
		if err != nil {
			return nil, err
		}
		if c.Service != "" {
			if err := id.Authz.ServiceRead(c.Service).Err(); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case m.closed:
		return nil, ErrShuttingDown
	case m.open[c.WatchId]:
		return nil, fmt.Errorf("%w: watch_id %d is already open on this stream", validate.ErrInvalid, c.WatchId)
	case len(m.open) >= s.cfg.MaxWatchesPerStream:
		return nil, fmt.Errorf("%w: %d, the limit (MaxWatchesPerStream)", ErrTooManyStreamWatches, s.cfg.MaxWatchesPerStream)
	}
	release, err := s.admitWatch(m.ctx)
	if err != nil {
		return nil, err
	}
	select {
	case s.watchers <- struct{}{}:
		s.metrics.watchers.Inc()
	default:
		release()
		return nil, fmt.Errorf("%w: %d, the limit (--max-watchers)", ErrTooManyWatchers, cap(s.watchers))
	}
	m.open[c.WatchId] = true
	return &muxWatch{id: c.WatchId, service: c.Service, after: c.AfterIndex, release: func() {
		release()
		<-s.watchers
		s.metrics.watchers.Dec()
	}}, nil
}

// endedMessage says that watch id is over with st.
func endedMessage(id uint64, err error) *registryv1.WatchManyResponse {
	st := status.Convert(err)
	return &registryv1.WatchManyResponse{WatchIds: []uint64{id},
		Ended: &registryv1.WatchEnded{Code: uint32(st.Code()), Message: st.Message()}}
}

// applyCommands starts the watches created since the last round (those of
// one service from index zero share one reset), ends the canceled ones
// and sends the refusals, in the order they arrived.
func (m *muxStream) applyCommands() error {
	m.mu.Lock()
	cmds := m.pending
	m.pending = nil
	m.mu.Unlock()
	fresh := map[string][]*muxWatch{} // to reset, by service
	for _, c := range cmds {
		switch {
		case c.ended != nil:
			if err := m.stream.Send(c.ended); err != nil {
				return err
			}
		case c.watch != nil && c.watch.after == 0:
			fresh[c.watch.service] = append(fresh[c.watch.service], c.watch)
		case c.watch != nil:
			m.join(groupKey{c.watch.service, c.watch.after}, c.watch)
		default:
			if err := m.cancel(c.cancel, fresh); err != nil {
				return err
			}
		}
	}
	for service, ws := range fresh {
		if len(ws) > 0 {
			if err := m.reset(service, ws); err != nil {
				return err
			}
		}
	}
	return nil
}

// join puts w into the group of key.
func (m *muxStream) join(key groupKey, ws ...*muxWatch) {
	m.groups[key] = append(m.groups[key], ws...)
	for _, w := range ws {
		m.where[w.id] = key
	}
}

// cancel ends watch id (in a group, or just created and not yet reset).
// A cancel of a watch that is not open is ignored: it ended already.
func (m *muxStream) cancel(id uint64, fresh map[string][]*muxWatch) error {
	var w *muxWatch
	if key, ok := m.where[id]; ok {
		g := m.groups[key]
		i := slices.IndexFunc(g, func(w *muxWatch) bool { return w.id == id })
		w = g[i]
		if g = slices.Delete(g, i, i+1); len(g) == 0 {
			delete(m.groups, key)
		} else {
			m.groups[key] = g
		}
		delete(m.where, id)
	} else {
		for service, ws := range fresh {
			if i := slices.IndexFunc(ws, func(w *muxWatch) bool { return w.id == id }); i >= 0 {
				w = ws[i]
				fresh[service] = slices.Delete(ws, i, i+1)
			}
		}
	}
	if w == nil {
		return nil
	}
	m.end(w)
	return m.stream.Send(&registryv1.WatchManyResponse{WatchIds: []uint64{id}, Ended: &registryv1.WatchEnded{}})
}

// end frees w's slots and its id.
func (m *muxStream) end(w *muxWatch) {
	w.release()
	m.mu.Lock()
	delete(m.open, w.id)
	m.mu.Unlock()
}

// releaseAll frees the slots of every watch when the stream ends.
func (m *muxStream) releaseAll() {
	for key, ws := range m.groups {
		for _, w := range ws {
			m.end(w)
		}
		delete(m.groups, key)
	}
	m.mu.Lock()
	m.closed = true
	pending := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, c := range pending {
		if c.watch != nil {
			m.end(c.watch)
		}
	}
}

// reset sends the watches ws of service (one token, one stream: the same
// view) one reset naming them all, and groups them at its index.
func (m *muxStream) reset(service string, ws []*muxWatch) error {
	ids := watchIDs(ws)
	index, err := m.s.reset(m.ctx, service, func(msg *registryv1.WatchResponse) error {
		return m.stream.Send(&registryv1.WatchManyResponse{WatchIds: ids, Response: msg})
	})
	if err != nil {
		return err
	}
	m.join(groupKey{service, index}, ws...)
	return nil
}

// sendRound sends every group the next message it has, and says whether
// any group moved (there may be more to send at once).
func (m *muxStream) sendRound() (bool, error) {
	keys := make([]groupKey, 0, len(m.groups))
	for k := range m.groups {
		keys = append(keys, k)
	}
	progressed := false
	for _, key := range keys {
		ws := m.groups[key]
		b, err := m.s.nextBatch(m.ctx, key.service, key.after)
		switch {
		case errors.Is(err, fsm.ErrCompacted):
			// Left behind: the group's watches get a reset, never a gap.
			m.leave(key)
			if err := m.reset(key.service, ws); err != nil {
				return false, err
			}
			progressed = true
			continue
		case err != nil:
			return false, m.s.toStatus(err)
		}
		if b.events > 0 {
			msg := &registryv1.WatchManyResponse{WatchIds: watchIDs(ws)}
			// The response field, already encoded: copied as it is.
			raw := protowire.AppendTag(nil, 2, protowire.BytesType)
			msg.ProtoReflect().SetUnknown(protowire.AppendBytes(raw, b.raw))
			if err := m.stream.SendMsg(msg); err != nil {
				return false, err
			}
			m.s.metrics.watchEvents.Add(float64(b.events * len(ws)))
		}
		if b.next > key.after {
			m.leave(key)
			m.join(groupKey{key.service, b.next}, ws...)
			progressed = true
		}
	}
	return progressed, nil
}

// leave removes the group of key (its watches are joined elsewhere next).
func (m *muxStream) leave(key groupKey) {
	for _, w := range m.groups[key] {
		delete(m.where, w.id)
	}
	delete(m.groups, key)
}

func watchIDs(ws []*muxWatch) []uint64 {
	ids := make([]uint64, len(ws))
	for i, w := range ws {
		ids[i] = w.id
	}
	return ids
}
