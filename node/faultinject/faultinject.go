// Package faultinject is a test-only Raft transport wrapper that drops the
// Raft traffic between this node and chosen peers, one direction at a time,
// so that integration tests can partition real registry-node processes.
//
// It is installed only by registry-node --test-fault-injection. It never
// touches Raft's messages: an outbound RPC to a blocked peer fails before it
// is sent, and an inbound RPC whose header names a blocked peer (by server id
// or Raft address: hashicorp/raft's RPCHeader carries both) is answered with
// an error instead of reaching Raft. Blocking the outbound side on both
// nodes is a clean partition; one node's outbound side alone is a one-way
// link fault.
//
// Caveat: an error answer to a pipelined AppendEntries makes hashicorp/raft
// v1.7.3's pipelineDecode exit, and if the leader then has more than the
// pipeline's 128 in-flight requests to send, pipelineReplicate blocks for
// ever and the follower stays behind until the leadership changes. Prefer
// outbound blocks on both sides to inbound blocks.
//
// # Concurrency
//
// A Transport is safe for concurrent use; Block and Blocked may be called at
// any time. Close stops the goroutine that filters the consumer channel.
package faultinject

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// ErrBlocked is the error of an RPC dropped by fault injection.
var ErrBlocked = errors.New("faultinject: link blocked")

// Transport wraps a raft.Transport and drops the RPCs to and from blocked
// peers.
type Transport struct {
	inner    raft.Transport
	consumer chan raft.RPC
	stop     chan struct{}
	wg       sync.WaitGroup
	closing  sync.Once

	mu       sync.Mutex
	inbound  map[string]bool // peer id or Raft address → drop its RPCs to us
	outbound map[string]bool // peer id or Raft address → refuse our RPCs to it
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

// Wrap returns a Transport that forwards to inner until peers are blocked.
func Wrap(inner raft.Transport) *Transport {
	t := &Transport{
		inner:    inner,
		consumer: make(chan raft.RPC),
		stop:     make(chan struct{}),
		inbound:  map[string]bool{},
		outbound: map[string]bool{},
	}
	t.wg.Add(1)
	go t.filter()
	return t
}

// Faults is the set of blocked peers, each named by server id or Raft
// address. It is the body of the control endpoint's POST and GET.
type Faults struct {
	// Block drops both directions.
	Block []string `json:"block,omitempty"`
	// BlockInbound drops only the RPCs these peers send to this node.
	BlockInbound []string `json:"block_inbound,omitempty"`
	// BlockOutbound refuses only the RPCs this node sends to these peers.
	BlockOutbound []string `json:"block_outbound,omitempty"`
}

// Set replaces the blocked peers; the zero Faults heals every link.
func (t *Transport) Set(f Faults) {
	in, out := map[string]bool{}, map[string]bool{}
	for _, p := range f.Block {
		in[p], out[p] = true, true
	}
	for _, p := range f.BlockInbound {
		in[p] = true
	}
	for _, p := range f.BlockOutbound {
		out[p] = true
	}
	t.mu.Lock()
	t.inbound, t.outbound = in, out
	t.mu.Unlock()
}

// Get returns the blocked peers, sorted, per direction.
func (t *Transport) Get() Faults {
	t.mu.Lock()
	defer t.mu.Unlock()
	var f Faults
	for p := range t.inbound {
		if t.outbound[p] {
			f.Block = append(f.Block, p)
		} else {
			f.BlockInbound = append(f.BlockInbound, p)
		}
	}
	for p := range t.outbound {
		if !t.inbound[p] {
			f.BlockOutbound = append(f.BlockOutbound, p)
		}
	}
	slices.Sort(f.Block)
	slices.Sort(f.BlockInbound)
	slices.Sort(f.BlockOutbound)
	return f
}

func (t *Transport) outBlocked(id raft.ServerID, addr raft.ServerAddress) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.outbound[string(id)] || t.outbound[string(addr)] {
		return fmt.Errorf("%w: to %s (%s)", ErrBlocked, id, addr)
	}
	return nil
}

// inBlocked reports whether rpc comes from a blocked peer.
func (t *Transport) inBlocked(rpc raft.RPC) bool {
	h, ok := rpc.Command.(raft.WithRPCHeader)
	if !ok {
		return false
	}
	hdr := h.GetRPCHeader()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inbound[string(hdr.ID)] || t.inbound[string(hdr.Addr)]
}

func (t *Transport) filter() {
	defer t.wg.Done()
	in := t.inner.Consumer()
	for {
		select {
		case <-t.stop:
			return
		case rpc := <-in:
			if t.inBlocked(rpc) {
				// InstallSnapshot streams its data after the request: the
				// inner transport closes the connection on error.
				rpc.Respond(nil, ErrBlocked)
				continue
			}
			select {
			case t.consumer <- rpc:
			case <-t.stop:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		}
	}
}

// Consumer implements raft.Transport.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumer }

// LocalAddr implements raft.Transport.
func (t *Transport) LocalAddr() raft.ServerAddress { return t.inner.LocalAddr() }

// AppendEntriesPipeline implements raft.Transport.
func (t *Transport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if err := t.outBlocked(id, target); err != nil {
		return nil, err
	}
	p, err := t.inner.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &pipeline{AppendPipeline: p, t: t, id: id, addr: target}, nil
}

// AppendEntries implements raft.Transport.
func (t *Transport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.outBlocked(id, target); err != nil {
		return err
	}
	return t.inner.AppendEntries(id, target, args, resp)
}

// RequestVote implements raft.Transport.
func (t *Transport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.outBlocked(id, target); err != nil {
		return err
	}
	return t.inner.RequestVote(id, target, args, resp)
}

// RequestPreVote implements raft.WithPreVote when the inner transport does.
func (t *Transport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.outBlocked(id, target); err != nil {
		return err
	}
	pv, ok := t.inner.(raft.WithPreVote)
	if !ok {
		return errors.New("faultinject: the inner transport has no pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// InstallSnapshot implements raft.Transport.
func (t *Transport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.outBlocked(id, target); err != nil {
		return err
	}
	return t.inner.InstallSnapshot(id, target, args, resp, data)
}

// EncodePeer implements raft.Transport.
func (t *Transport) EncodePeer(id raft.ServerID, addr raft.ServerAddress) []byte {
	return t.inner.EncodePeer(id, addr)
}

// DecodePeer implements raft.Transport.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return t.inner.DecodePeer(b) }

// SetHeartbeatHandler implements raft.Transport: heartbeats from blocked
// peers are answered with an error, like every other RPC.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.inner.SetHeartbeatHandler(nil)
		return
	}
	t.inner.SetHeartbeatHandler(func(rpc raft.RPC) {
		if t.inBlocked(rpc) {
			rpc.Respond(nil, ErrBlocked)
			return
		}
		cb(rpc)
	})
}

// TimeoutNow implements raft.Transport.
func (t *Transport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := t.outBlocked(id, target); err != nil {
		return err
	}
	return t.inner.TimeoutNow(id, target, args, resp)
}

// Close stops the filter and closes the inner transport if it can be.
func (t *Transport) Close() error {
	var err error
	t.closing.Do(func() {
		if c, ok := t.inner.(raft.WithClose); ok {
			err = c.Close()
		}
		close(t.stop)
		t.wg.Wait()
	})
	return err
}

// pipeline refuses appends once its peer is blocked, so that a pipeline
// opened before the fault does not keep the link up.
type pipeline struct {
	raft.AppendPipeline
	t    *Transport
	id   raft.ServerID
	addr raft.ServerAddress
}

func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if err := p.t.outBlocked(p.id, p.addr); err != nil {
		return nil, err
	}
	return p.AppendPipeline.AppendEntries(args, resp)
}

// Handler serves the control endpoint: GET returns the current Faults as
// JSON, POST replaces them with the JSON body (an empty object heals).
func (t *Transport) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost:
			var f Faults
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&f); err != nil {
				http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
				return
			}
			t.Set(f)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(t.Get())
	})
}
