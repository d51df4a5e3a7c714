package nodetest

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/node"
)

// StartReplica starts one more node, n<len+1>, that joins through node
// via's gRPC address as a read replica (node.Config.ReadReplica), on the
// same in-memory network, and returns its index. It is shut down with the
// cluster.
func (c *Cluster) StartReplica(via int, configure func(*node.Config)) int {
	c.t.Helper()
	i := len(c.Nodes)
	addr, tr := raft.NewInmemTransport("")
	for j, other := range c.trans {
		if !c.down[j] {
			tr.Connect(c.addrs[j], other)
			other.Connect(addr, tr)
		}
	}
	c.addrs, c.trans, c.down = append(c.addrs, addr), append(c.trans, tr), append(c.down, false)
	cfg := node.DefaultConfig()
	cfg.NodeID = fmt.Sprintf("n%d", i+1)
	cfg.InMemory = true
	cfg.RaftTransport = tr
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = ""
	cfg.Join = c.Nodes[via].GRPCAddr()
	cfg.ReadReplica = true
	cfg.Raft = FastRaft
	cfg.Checker = beatcheck.Config{SweepInterval: 20 * time.Millisecond, FailoverGrace: time.Second}
	cfg.Logger = Logger(c.t, cfg.NodeID)
	if configure != nil {
		configure(&cfg)
	}
	nd, err := node.New(cfg)
	if err != nil {
		c.t.Fatalf("starting %s: %v", cfg.NodeID, err)
	}
	c.Nodes = append(c.Nodes, nd)
	cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.Conns = append(c.Conns, cc)
	return i
}
