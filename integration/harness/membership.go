package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// Membership changes. AddNode and RemoveNode change the cluster's list of
// nodes, which the other Cluster methods read without a lock: call them
// from the test goroutine, not while another goroutine uses the Cluster
// (Beater, EventRecorder and a workload's own node lists are fine: they
// keep their own copies).

// AddNode starts a new node, n<k> on the next free port slot (see
// Options.Spare), with --join pointing at a running member (the last known
// leader if it runs), and waits until it answers and every running node's
// configuration lists it as a voter with its gRPC address published. The
// node is one of Nodes from then on; the cleanup stops it by pid like the
// others. Without a spare slot left it returns an error wrapping
// ErrNoSpareSlot.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	n, via, err := c.join(ctx, "node")
	if err != nil {
		return nil, err
	}
	if err := c.WaitRole(ctx, n, "voter"); err != nil {
		return nil, fmt.Errorf("harness: %s joined through %s but is not a voter everywhere: %w", n.id, via.id, err)
	}
	c.logf("%s: joined through %s as a voter", n.id, via.id)
	return n, nil
}

// join starts a new node on the next free port slot with --join pointing
// at a running member (the last known leader if it runs) and extra flags,
// makes it one of Nodes and waits until it answers. It returns the node
// and the member it joined through; what names the kind in errors.
func (c *Cluster) join(ctx context.Context, what string, extra ...string) (n, via *Node, err error) {
	c.mu.Lock()
	slot := len(c.nodes) + len(c.removed) + len(c.outsiders)
	c.mu.Unlock()
	if slot >= c.opts.Nodes+c.opts.Spare {
		return nil, nil, fmt.Errorf("add %s: %w (Options.Nodes %d, Spare %d)", what, ErrNoSpareSlot, c.opts.Nodes, c.opts.Spare)
	}
	via = c.Leader()
	if via == nil {
		running := c.Running()
		if len(running) == 0 {
			return nil, nil, fmt.Errorf("harness: add %s: no running member to join through", what)
		}
		via = running[0]
	}
	if n, err = c.newNode(slot, "--join="+via.grpcAddr); err != nil {
		return nil, nil, fmt.Errorf("harness: add %s: %w", what, err)
	}
	n.args = append(n.args, extra...)
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	if err := n.start(); err != nil {
		return nil, nil, err
	}
	if err := n.WaitReady(ctx); err != nil {
		return nil, nil, err
	}
	return n, via, nil
}

// RemoveNode removes n from the Raft configuration (Cluster.Remove of its
// id, sent to another running member, which forwards it to the leader; n
// may be the leader, which steps down once its removal commits), then stops
// n's process gracefully and waits until every remaining running node's
// configuration leaves n out. From then on n is not among Nodes (its log
// is still printed if the test fails); its process may not be restarted.
func (c *Cluster) RemoveNode(ctx context.Context, n *Node) error {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.LeaderTimeout+c.opts.ApplyTimeout)
	defer cancel()
	var others []*Node
	for _, m := range c.Running() {
		if m != n {
			others = append(others, m)
		}
	}
	if len(others) == 0 {
		return fmt.Errorf("harness: remove %s: no other running member to ask", n.id)
	}
	// Remove is safe to repeat: removing a server that is no longer in
	// the configuration changes nothing.
	var (
		try       int
		permanent error
	)
	err := poll.Until(ctx, func(ctx context.Context) error {
		via := others[try%len(others)]
		try++
		cctx, cancel := context.WithTimeout(ctx, 2*statusTimeout)
		defer cancel()
		_, err := via.ClusterClient().Remove(cctx, &registryv1.RemoveRequest{NodeId: n.id})
		if err != nil {
			err = fmt.Errorf("Cluster.Remove(%s) through %s: %w", n.id, via.id, err)
			if !retryable(err) {
				permanent = err
				return nil
			}
		}
		return err
	})
	if err == nil {
		err = permanent
	}
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if n.Alive() {
		if err := n.Stop(); err != nil {
			return fmt.Errorf("harness: removed %s but stopping it: %w", n.id, err)
		}
	}
	c.mu.Lock()
	c.nodes = slices.DeleteFunc(c.nodes, func(m *Node) bool { return m == n })
	c.removed = append(c.removed, n)
	if c.leader == n {
		c.leader = nil
	}
	c.mu.Unlock()
	err = poll.Until(ctx, func(ctx context.Context) error {
		for _, m := range others {
			if !m.Running() {
				continue
			}
			st, err := m.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			if slices.ContainsFunc(st.GetMembers(), func(mb *registryv1.Member) bool { return mb.GetId() == n.id }) {
				return fmt.Errorf("%s's configuration still lists %s: %s", m.id, n.id, describeMembers(st.GetMembers()))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("harness: %s removed and stopped, but: %w", n.id, err)
	}
	c.logf("%s: removed from the configuration and stopped", n.id)
	return nil
}

// everyNode returns the members and the removed nodes, for the logs.
func (c *Cluster) everyNode() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(append(slices.Clone(c.nodes), c.removed...), c.outsiders...)
}

// describeMembers lists a configuration for error messages.
func describeMembers(members []*registryv1.Member) string {
	var parts []string
	for _, m := range members {
		s := m.GetId()
		if !m.GetVoter() {
			s += "(nonvoter)"
		}
		if m.GetLeader() {
			s += "(leader)"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// retryable reports whether a membership call may succeed if repeated.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
