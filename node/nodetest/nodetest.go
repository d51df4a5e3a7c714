// Package nodetest runs in-process registry clusters for tests: n nodes over
// in-memory Raft transports with fast timeouts, each serving real gRPC on
// 127.0.0.1. It is for tests only.
package nodetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
)

// FastRaft keeps elections quick for in-process clusters.
var FastRaft = node.RaftTiming{
	HeartbeatTimeout:   100 * time.Millisecond,
	ElectionTimeout:    100 * time.Millisecond,
	LeaderLeaseTimeout: 100 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

// Cluster is n in-process nodes.
type Cluster struct {
	t     testing.TB
	Nodes []*node.Node
	Conns []*grpc.ClientConn
	addrs []raft.ServerAddress
	trans []*raft.InmemTransport
	down  []bool
}

// New starts n nodes; t.Cleanup shuts them down. configure, if not nil,
// adjusts each node's Config before it starts.
func New(t testing.TB, n int, configure func(*node.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t, addrs: make([]raft.ServerAddress, n), trans: make([]*raft.InmemTransport, n), down: make([]bool, n)}
	for i := range n {
		c.addrs[i], c.trans[i] = raft.NewInmemTransport("")
	}
	for i := range n {
		for j := range n {
			if i != j {
				c.trans[i].Connect(c.addrs[j], c.trans[j])
			}
		}
	}
	var peers []node.Peer
	for i := range n {
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), Address: string(c.addrs[i])})
	}
	t.Cleanup(c.closeAll)
	for i := range n {
		cfg := node.DefaultConfig()
		cfg.NodeID = peers[i].ID
		cfg.InMemory = true
		cfg.RaftTransport = c.trans[i]
		cfg.GRPCAddr = "127.0.0.1:0"
		cfg.HTTPAddr = ""
		cfg.BootstrapPeers = peers
		cfg.Raft = FastRaft
		// A grace that covers a client's failover with a 200ms backoff cap.
		cfg.Checker = beatcheck.Config{SweepInterval: 20 * time.Millisecond, FailoverGrace: time.Second}
		cfg.Logger = Logger(t, peers[i].ID)
		if configure != nil {
			configure(&cfg)
		}
		nd, err := node.New(cfg)
		if err != nil {
			t.Fatalf("starting %s: %v", cfg.NodeID, err)
		}
		c.Nodes = append(c.Nodes, nd)
		cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		c.Conns = append(c.Conns, cc)
	}
	return c
}

func (c *Cluster) closeAll() {
	for _, cc := range c.Conns {
		cc.Close()
	}
	for i := range c.Nodes {
		if err := c.Shutdown(i); err != nil {
			c.t.Errorf("shutdown n%d: %v", i+1, err)
		}
	}
}

// Shutdown stops node i and cuts it off the in-memory network, as a
// stopped process would be: Raft calls to it fail at once instead of
// waiting for a consumer that is gone. Shutting down a stopped node is a
// no-op.
func (c *Cluster) Shutdown(i int) error {
	if c.down[i] {
		return nil
	}
	c.down[i] = true
	err := c.Nodes[i].Shutdown(context.Background())
	for j, tr := range c.trans {
		if j != i {
			tr.Disconnect(c.addrs[i])
		}
	}
	return err
}

// Endpoints returns the gRPC addresses of the nodes.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		out[i] = nd.GRPCAddr()
	}
	return out
}

// Leader waits until one running node leads and every running node can
// reach it, and returns its position.
func (c *Cluster) Leader() int {
	c.t.Helper()
	var leader int
	poll.Eventually(c.t, 10*time.Second, func(context.Context) error {
		leader = -1
		for i, nd := range c.Nodes {
			if !c.down[i] && nd.IsLeader() {
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("no leader yet")
		}
		for i, nd := range c.Nodes {
			if c.down[i] {
				continue
			}
			if _, err := nd.LeaderConn(); err != nil {
				return fmt.Errorf("%s: %v", nd.ID(), err)
			}
		}
		return nil
	})
	return leader
}

// Registry returns a Registry client for node i.
func (c *Cluster) Registry(i int) registryv1.RegistryClient {
	return registryv1.NewRegistryClient(c.Conns[i])
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// Logger sends logs to t.Log, so that they show with a failing test only.
func Logger(t testing.TB, id string) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test_node", id)
}

// Single starts one node that is a cluster of its own and waits until it
// leads; configure, if not nil, adjusts its Config first (its TLS files,
// say). Unlike New it opens no connection to the node, so that the test
// chooses how to connect. t.Cleanup shuts it down.
func Single(t testing.TB, configure func(*node.Config)) *node.Node {
	t.Helper()
	addr, tr := raft.NewInmemTransport("")
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.InMemory, cfg.RaftTransport = "n1", true, tr
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.BootstrapPeers = []node.Peer{{ID: "n1", Address: string(addr)}}
	cfg.Raft = FastRaft
	cfg.Logger = Logger(t, "n1")
	if configure != nil {
		configure(&cfg)
	}
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatalf("starting n1: %v", err)
	}
	t.Cleanup(func() {
		if err := nd.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown n1: %v", err)
		}
	})
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if !nd.IsLeader() {
			return errors.New("n1 does not lead yet")
		}
		return nil
	})
	return nd
}

// Buffer is a bytes.Buffer safe for concurrent writers and a reader, for
// capturing a cluster's logs.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
