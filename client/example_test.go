package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/node"
)

// startNode starts a one-node registry in memory, for the example.
func startNode() (*node.Node, error) {
	addr, tr := raft.NewInmemTransport("")
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.InMemory, cfg.RaftTransport = "n1", true, tr
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.BootstrapPeers = []node.Peer{{ID: "n1", Address: string(addr)}}
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	return node.New(cfg)
}

func Example() {
	n, err := startNode()
	if err != nil {
		log.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.New(client.Config{Endpoints: []string{n.GRPCAddr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reg, err := c.Register(ctx, client.Instance{Service: "orders", ID: "orders-1",
		Address: "127.0.0.5:8080", Metadata: map[string]string{"zone": "a"}},
		client.WithBeatInterval(time.Second), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Deregister(ctx)
	insts, err := c.Discover(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}
	for _, in := range insts {
		fmt.Println(in.Service, in.ID, in.Address, in.Metadata["zone"], in.State)
	}
	// Output: orders orders-1 127.0.0.5:8080 a healthy
}
