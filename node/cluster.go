package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/validate"
)

// defaultTimeout bounds Raft operations whose context has no deadline.
const defaultTimeout = 10 * time.Second

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return defaultTimeout
}

// waitFuture waits for a Raft future or the context. The goroutine it
// starts ends when the future resolves, which Raft guarantees at the latest
// when it shuts down.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Apply implements fsm.Proposer. It is the only caller of raft.Apply: it
// proposes the encoded command, waits for it to be applied within ctx, turns
// an fsm domain error in the response into a Go error, and wraps Raft's
// errors that mean this node does not lead in fsm.ErrLeadershipLost.
func (n *Node) Apply(ctx context.Context, e fsm.Entry) (any, error) {
	if len(e.Data()) == 0 {
		return nil, errors.New("node: refusing to propose an empty entry (make entries with fsm.Propose)")
	}
	n.metrics.observeProposal(e.Type(), len(e.Data()))
	f := n.raft.Apply(e.Data(), timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrRaftShutdown) {
			return nil, fmt.Errorf("%w: %w", fsm.ErrLeadershipLost, err)
		}
		return nil, err
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// IsLeader implements rpc.Cluster.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader implements rpc.Cluster.
func (n *Node) Leader() (string, bool) {
	_, id := n.raft.LeaderWithID()
	return string(id), id != ""
}

// LeaderConn implements rpc.Cluster.
func (n *Node) LeaderConn() (*grpc.ClientConn, error) {
	id, ok := n.Leader()
	if !ok {
		return nil, rpc.ErrNoLeader
	}
	meta, ok := n.fsm.Node(id)
	if !ok || meta.GRPCAddress == "" {
		return nil, fmt.Errorf("%w: leader %s has not published its address yet", rpc.ErrNoLeader, id)
	}
	return n.conns.get(meta.GRPCAddress)
}

// ReadBarrier implements rpc.Cluster with a Raft barrier: the barrier
// entry commits only with a quorum in this leader's term, and returns once
// everything before it is applied to the fsm. Concurrent reads share one
// barrier.
func (n *Node) ReadBarrier(ctx context.Context) error {
	_, err := n.barriers.Submit(ctx, []struct{}{{}})
	return err
}

func (n *Node) flushBarrier(ctx context.Context, items []struct{}) ([]uint64, error) {
	f := n.raft.Barrier(timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return nil, err
	}
	return make([]uint64, len(items)), nil
}

// VerifyLeader implements beatcheck.Proposer: it confirms with a quorum
// that this node still leads.
func (n *Node) VerifyLeader(ctx context.Context) error {
	return waitFuture(ctx, n.raft.VerifyLeader())
}

// ReleaseExpiryGuard implements rpc.Cluster.
func (n *Node) ReleaseExpiryGuard(context.Context) (bool, int, error) {
	st := n.checker.Status()
	if !st.Running {
		return false, 0, rpc.ErrNotLeader
	}
	n.checker.Release()
	return st.GuardEngaged, st.Held, nil
}

// Status implements rpc.Cluster.
func (n *Node) Status(ctx context.Context) (rpc.Status, error) {
	_, leaderID := n.raft.LeaderWithID()
	st := rpc.Status{
		NodeID:       n.cfg.NodeID,
		Role:         strings.ToLower(n.raft.State().String()),
		Term:         n.raft.CurrentTerm(),
		LeaderID:     string(leaderID),
		AppliedIndex: n.raft.AppliedIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		LastLogIndex: n.raft.LastIndex(),
	}
	if meta, ok := n.fsm.Node(string(leaderID)); ok {
		st.LeaderGRPCAddress, st.LeaderHTTPAddress = meta.GRPCAddress, meta.HTTPAddress
	}
	cs := n.checker.Status()
	st.CheckerRunning = cs.Running
	st.ExpiryGuardEngaged = cs.GuardEngaged
	st.ExpiriesHeld = cs.Held
	st.ExpiryGuardReleased = cs.Released
	st.FailoverFenceRemaining = cs.FenceRemaining
	if skew, ok := n.skew.estimate(); ok && !n.IsLeader() {
		st.ClockSkew, st.ClockSkewKnown = skew, true
	}
	if last := n.raft.LastContact(); !last.IsZero() && !n.IsLeader() {
		st.LastContact, st.LastContactKnown = time.Since(last), true
	}
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return rpc.Status{}, err
	}
	for _, srv := range conf.Servers {
		m := rpc.Member{
			ID:          string(srv.ID),
			RaftAddress: string(srv.Address),
			Voter:       srv.Suffrage == raft.Voter,
			Leader:      srv.ID == leaderID,
		}
		if meta, ok := n.fsm.Node(string(srv.ID)); ok {
			m.GRPCAddress, m.HTTPAddress = meta.GRPCAddress, meta.HTTPAddress
		}
		st.Members = append(st.Members, m)
	}
	return st, nil
}

// configuration returns the current Raft configuration.
func (n *Node) configuration(ctx context.Context) (raft.Configuration, uint64, error) {
	cf := n.raft.GetConfiguration()
	if err := waitFuture(ctx, cf); err != nil {
		return raft.Configuration{}, 0, err
	}
	return cf.Configuration(), cf.Index(), nil
}

// AddVoter implements rpc.Cluster. A read replica that asks to join again
// (without --read-replica, at any address) stays a replica: Promote, not
// a restart's flags, changes a member's role.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr string) (uint64, error) {
	conf, index, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	if srv, ok := findServer(conf, id); ok {
		if srv.Suffrage != raft.Voter {
			return n.AddNonvoter(ctx, id, raftAddr)
		}
		if string(srv.Address) == raftAddr {
			return index, nil
		}
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, err
	}
	n.log.Info("added voter", "peer_id", id, "raft_addr", raftAddr, "index", f.Index())
	return f.Index(), nil
}

// RemoveServer implements rpc.Cluster; an id that is not in the
// configuration is rpc.ErrNotMember (Raft itself would commit a
// configuration change that changes nothing).
func (n *Node) RemoveServer(ctx context.Context, id string) (uint64, error) {
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return 0, err
	}
	if !slices.ContainsFunc(conf.Servers, func(srv raft.Server) bool { return string(srv.ID) == id }) {
		return 0, fmt.Errorf("%w: %q", rpc.ErrNotMember, id)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return 0, err
	}
	n.log.Info("removed server", "peer_id", id, "index", f.Index())
	return f.Index(), nil
}

// TransferLeadership implements rpc.Cluster.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		conf, _, err := n.configuration(ctx)
		if err != nil {
			return "", err
		}
		srv, ok := findServer(conf, id)
		if !ok {
			return "", validate.FieldErrorf("node_id", "%q is not a member of the cluster", id)
		}
		if srv.Suffrage != raft.Voter {
			return "", fmt.Errorf("%w: %q is a read replica, which cannot lead; promote it first", rpc.ErrMembershipRefused, id)
		}
		f = n.raft.LeadershipTransferToServer(srv.ID, srv.Address)
	}
	if err := waitFuture(ctx, f); err != nil {
		return "", err
	}
	// The target wins its election shortly after the transfer returns.
	for {
		if leader, ok := n.Leader(); ok && leader != n.cfg.NodeID {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (n *Node) hasOtherVoters() bool {
	conf, _, err := n.configuration(n.ctx)
	if err != nil {
		return false
	}
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != n.cfg.NodeID {
			return true
		}
	}
	return false
}

// connCache keeps one client connection per node address.
type connCache struct {
	creds credentials.TransportCredentials // set before first use: TLS or insecure
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (c *connCache) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = make(map[string]*grpc.ClientConn)
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *connCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, cc := range c.conns {
		cc.Close()
		delete(c.conns, addr)
	}
}
