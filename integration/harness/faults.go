package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// Faults are the Raft peers a node (started with Options.FaultInjection)
// drops traffic to and from, each named by node id or Raft address. It is
// the JSON of the node's test-only POST /debug/faults endpoint.
type Faults struct {
	// Block drops both directions.
	Block []string `json:"block,omitempty"`
	// BlockInbound drops only the Raft RPCs these peers send to the node.
	BlockInbound []string `json:"block_inbound,omitempty"`
	// BlockOutbound refuses only the Raft RPCs the node sends to them.
	BlockOutbound []string `json:"block_outbound,omitempty"`
}

// faultsTimeout bounds one call to a node's fault endpoint.
const faultsTimeout = 2 * time.Second

// SetFaults replaces the node's Raft link faults (the zero Faults heals
// them). Faults live in the process: a restarted node starts healed.
//
// Inbound blocks answer the blocked peer's RPCs with an error; on a
// pipelined AppendEntries connection that can wedge the sender's
// replication to this node in hashicorp/raft v1.7.3 (see Partition), so
// prefer BlockOutbound on both sides for a two-way cut.
func (n *Node) SetFaults(ctx context.Context, f Faults) error {
	if !n.cluster.opts.FaultInjection {
		return errors.New("harness: SetFaults needs Options.FaultInjection")
	}
	if _, err := n.live(); err != nil {
		return err
	}
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	ctx, cancel := poll.WithDefaultTimeout(ctx, faultsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.HTTPURL("/debug/faults"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.cluster.HTTPClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s: set faults: %w", n.id, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: set faults: %s: %s", n.id, resp.Status, bytes.TrimSpace(msg))
	}
	n.cluster.logf("%s: raft faults %s", n.id, bytes.TrimSpace(msg))
	return nil
}

// Partition cuts the Raft links between every node of a and every node of b,
// in both directions, on top of the faults already set by Partition and
// Isolate: each node refuses its outbound Raft RPCs to the other side. The
// nodes must be running.
func (c *Cluster) Partition(ctx context.Context, a, b []*Node) error {
	c.faultMu.Lock()
	defer c.faultMu.Unlock()
	if c.blocked == nil {
		c.blocked = map[*Node]map[string]bool{}
	}
	add := func(n, peer *Node) {
		if c.blocked[n] == nil {
			c.blocked[n] = map[string]bool{}
		}
		c.blocked[n][peer.id] = true
	}
	for _, x := range a {
		for _, y := range b {
			if x != y {
				add(x, y)
				add(y, x)
			}
		}
	}
	return c.pushFaults(ctx, append(append([]*Node{}, a...), b...))
}

// Isolate cuts n's Raft links to every other node, in both directions.
func (c *Cluster) Isolate(ctx context.Context, n *Node) error {
	var others []*Node
	for _, o := range c.nodes {
		if o != n {
			others = append(others, o)
		}
	}
	return c.Partition(ctx, []*Node{n}, others)
}

// Heal clears every Raft link fault set by Partition and Isolate on the
// nodes that are alive (a node that is down starts healed).
func (c *Cluster) Heal(ctx context.Context) error {
	c.faultMu.Lock()
	defer c.faultMu.Unlock()
	c.blocked = nil
	return c.pushFaults(ctx, c.alive())
}

// pushFaults sends each node its blocked set; faultMu is held. A node
// without a live process is skipped: it starts healed, and the peers'
// side of the fault still holds (see ReapplyFaults).
func (c *Cluster) pushFaults(ctx context.Context, nodes []*Node) error {
	seen := map[*Node]bool{}
	var errs []error
	for _, n := range nodes {
		if seen[n] || !n.Alive() {
			continue
		}
		seen[n] = true
		// Each side refuses only its own outbound RPCs: with both sides
		// set, that cuts both directions, and no node answers a peer's RPC
		// with an error. (An error answer on a pipelined AppendEntries
		// connection makes hashicorp/raft v1.7.3's pipelineDecode exit
		// while pipelineReplicate may block for ever on a full pipeline:
		// the follower then stays behind until the leader changes.)
		var f Faults
		for p := range c.blocked[n] {
			f.BlockOutbound = append(f.BlockOutbound, p)
		}
		if err := n.SetFaults(ctx, f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReapplyFaults sends n the faults Partition and Isolate set for it, after
// a restart (a new process starts healed).
func (c *Cluster) ReapplyFaults(ctx context.Context, n *Node) error {
	c.faultMu.Lock()
	defer c.faultMu.Unlock()
	return c.pushFaults(ctx, []*Node{n})
}

// TransferLeadership asks the current leader (found with WaitLeader) to
// hand leadership to target, then waits until every running node agrees
// that target leads.
func (c *Cluster) TransferLeadership(ctx context.Context, target *Node) error {
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		return err
	}
	if leader == target {
		return nil
	}
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.LeaderTimeout)
	defer cancel()
	err = poll.Until(ctx, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := leader.ClusterClient().TransferLeadership(cctx, &registryv1.TransferLeadershipRequest{NodeId: target.id})
		return err
	})
	if err != nil {
		return fmt.Errorf("harness: transfer leadership %s → %s: %w", leader.id, target.id, err)
	}
	got, err := c.WaitLeader(ctx)
	if err != nil {
		return err
	}
	if got != target {
		return fmt.Errorf("harness: transfer leadership to %s: %s leads", target.id, got.id)
	}
	return nil
}
