package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// errNoWatchMany: the endpoint does not serve WatchMany (an older node);
// its watches use a Watch stream each.
var errNoWatchMany = errors.New("client: the endpoint does not serve WatchMany")

// watchMuxes holds the Client's WatchMany stream to each endpoint: every
// watch the Client follows on an endpoint shares its one stream. A stream
// is opened by the first watch on its endpoint and closed by the last to
// leave, or when it breaks (its watches then resume as any broken watch
// does). The zero value is ready to use.
type watchMuxes struct {
	mu     sync.Mutex
	byAddr map[string]*watchMux
	old    map[string]bool // endpoints that answered WatchMany with UNIMPLEMENTED
}

func (ms *watchMuxes) unsupported(addr string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.old[addr]
}

// watchMux is one WatchMany stream and the watches on it.
type watchMux struct {
	addr   string
	cancel context.CancelFunc
	stream registryv1.Registry_WatchManyClient
	sendMu sync.Mutex
	done   chan struct{} // closed once the stream broke; err says why

	mu      sync.Mutex // guards watches, nextID, err
	watches map[uint64]*muxWatch
	nextID  uint64
	err     error
}

// muxWatch is one watch on a stream: its messages, in order.
type muxWatch struct {
	msgs chan *registryv1.WatchManyResponse
	gone chan struct{} // closed when the watch left: drop its messages
}

// joinMux adds a watch to addr's stream, opening the stream if there is
// none, and sends its create.
func (c *Client) joinMux(addr, service string, after uint64) (*watchMux, uint64, *muxWatch, error) {
	ms := &c.muxes
	ms.mu.Lock()
	m := ms.byAddr[addr]
	if m == nil {
		cc, err := c.conn(addr)
		if err != nil {
			ms.mu.Unlock()
			return nil, 0, nil, err
		}
		sctx, cancel := context.WithCancel(c.ctx)
		stream, err := registryv1.NewRegistryClient(cc).WatchMany(sctx)
		if err != nil {
			ms.mu.Unlock()
			cancel()
			return nil, 0, nil, err
		}
		m = &watchMux{addr: addr, cancel: cancel, stream: stream, done: make(chan struct{}), watches: map[uint64]*muxWatch{}}
		if ms.byAddr == nil {
			ms.byAddr = map[string]*watchMux{}
		}
		ms.byAddr[addr] = m
		// The watch that opens the stream runs in a goroutine of c.wg: the
		// count is above zero, Close waits for this one too.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.receiveMux(m)
		}()
	}
	m.mu.Lock()
	m.nextID++
	id, w := m.nextID, &muxWatch{msgs: make(chan *registryv1.WatchManyResponse, 16), gone: make(chan struct{})}
	m.watches[id] = w
	m.mu.Unlock()
	ms.mu.Unlock()
	// A send on a broken stream fails with io.EOF; the receiver learns
	// the stream's status and ends the watch with it (m.done).
	_ = m.send(&registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Create{
		Create: &registryv1.WatchCreate{WatchId: id, Service: service, AfterIndex: after}}})
	return m, id, w, nil
}

// leaveMux removes watch id from m, canceling it on the node, and closes the
// stream when it was the last watch.
func (c *Client) leaveMux(m *watchMux, id uint64, w *muxWatch) {
	ms := &c.muxes
	ms.mu.Lock()
	m.mu.Lock()
	delete(m.watches, id)
	close(w.gone)
	last := len(m.watches) == 0
	m.mu.Unlock()
	if last && ms.byAddr[m.addr] == m {
		delete(ms.byAddr, m.addr)
	}
	ms.mu.Unlock()
	if last {
		m.cancel()
		return
	}
	_ = m.send(&registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Cancel{
		Cancel: &registryv1.WatchCancel{WatchId: id}}}) // a broken stream has no watch to cancel
}

func (m *watchMux) send(req *registryv1.WatchManyRequest) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	return m.stream.Send(req)
}

// receiveMux hands each message of m to the watches it names, until the
// stream breaks. A watch that does not take its messages holds the
// stream back, as a Watch stream's reader does; the node then sends
// resets rather than gaps.
func (c *Client) receiveMux(m *watchMux) {
	defer m.cancel()
	for {
		msg, err := m.stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if status.Code(err) == codes.Unimplemented {
				c.muxes.mu.Lock()
				if c.muxes.old == nil {
					c.muxes.old = map[string]bool{}
				}
				c.muxes.old[m.addr] = true
				c.muxes.mu.Unlock()
				err = fmt.Errorf("%w: %w", errNoWatchMany, err)
			}
			c.muxes.mu.Lock()
			if c.muxes.byAddr[m.addr] == m {
				delete(c.muxes.byAddr, m.addr)
			}
			c.muxes.mu.Unlock()
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			close(m.done)
			return
		}
		for _, id := range msg.WatchIds {
			m.mu.Lock()
			w := m.watches[id]
			m.mu.Unlock()
			if w == nil {
				continue
			}
			select {
			case w.msgs <- msg:
			case <-w.gone:
			case <-m.done:
			case <-c.ctx.Done():
			}
		}
	}
}

// followMux follows on addr's WatchMany stream until it breaks, ctx
// ends, or the node ends the watch. errNoWatchMany: the endpoint serves
// only Watch.
func (c *Client) followMux(ctx context.Context, addr, service string, after *uint64, deliver func(update) error) (bool, error) {
	m, id, w, err := c.joinMux(addr, service, *after)
	if err != nil {
		return false, err
	}
	defer c.leaveMux(m, id, w)
	var f follower
	for {
		select {
		case msg := <-w.msgs:
			if e := msg.Ended; e != nil {
				if codes.Code(e.Code) == codes.OK {
					return f.delivered, io.ErrUnexpectedEOF // canceled by this client: not by this watch
				}
				return f.delivered, status.Error(codes.Code(e.Code), e.Message)
			}
			if err := f.handle(msg.Response, after, deliver); err != nil {
				return f.delivered, err
			}
		case <-m.done:
			m.mu.Lock()
			err := m.err
			m.mu.Unlock()
			return f.delivered, err
		case <-ctx.Done():
			return f.delivered, ctx.Err()
		}
	}
}
