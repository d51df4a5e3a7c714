package node

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// publishInterval is how often the publisher checks that this node is a
// member and that its addresses are recorded.
const publishInterval = time.Second

// publishAddresses makes sure this node is in the cluster and its client
// addresses are in the replicated state, so that every node can name and
// reach the leader. A node started with --join asks that address to add it;
// a member calls Join on itself, which the leader turns into a NodeMeta
// entry. It checks again every publishInterval (cheap, local reads), which
// also repairs the record after a restore from an older backup.
func (n *Node) publishAddresses() {
	defer n.wg.Done()
	grpcAddr, httpAddr := n.advertised()
	req := &registryv1.JoinRequest{
		NodeId:      n.cfg.NodeID,
		RaftAddress: n.RaftAddr(),
		GrpcAddress: grpcAddr,
		HttpAddress: httpAddr,
	}
	if n.cfg.RaftTransport == nil {
		req.RaftAddress = n.cfg.RaftAdvertise
	}
	ticker := time.NewTicker(publishInterval)
	defer ticker.Stop()
	for {
		if meta, ok := n.fsm.Node(n.cfg.NodeID); !ok || meta.GRPCAddress != grpcAddr || meta.HTTPAddress != httpAddr {
			if err := n.publishOnce(req); err != nil {
				n.log.Debug("publishing addresses", "error", err)
			}
		}
		n.readyNow() // latches the start-up commit index as soon as a leader is known
		select {
		case <-n.ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (n *Node) publishOnce(req *registryv1.JoinRequest) error {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if n.cfg.Join != "" && !n.isMember(ctx) {
		cc, err := grpc.NewClient(n.cfg.Join, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		_, err = registryv1.NewClusterClient(cc).Join(ctx, req)
		if err == nil {
			n.log.Info("joined the cluster", "via", n.cfg.Join)
		}
		return err
	}
	if _, ok := n.Leader(); !ok {
		return nil
	}
	_, err := n.rpc.Join(ctx, req)
	return err
}

func (n *Node) isMember(ctx context.Context) bool {
	conf, _, err := n.configuration(ctx)
	if err != nil {
		return false
	}
	for _, srv := range conf.Servers {
		if srv.ID == raft.ServerID(n.cfg.NodeID) {
			return true
		}
	}
	return false
}
