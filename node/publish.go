package node

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

// publishInterval is how often the publisher checks that this node is a
// member and that its addresses are recorded.
const publishInterval = time.Second

// publishAddresses makes sure this node is in the cluster and its client
// addresses are in the replicated state, so that every node can name and
// reach the leader. A node started with --join asks that address to add it;
// a member publishes its addresses itself (publishOnce). It checks again
// every publishInterval (cheap, local reads), which also repairs the record
// after a restore from an older backup.
func (n *Node) publishAddresses() {
	defer n.wg.Done()
	grpcAddr, httpAddr := n.advertised()
	req := &registryv1.JoinRequest{
		NodeId:      n.cfg.NodeID,
		RaftAddress: n.RaftAddr(),
		GrpcAddress: grpcAddr,
		HttpAddress: httpAddr,
		ReadReplica: n.cfg.ReadReplica,
	}
	if n.cfg.RaftTransport == nil {
		req.RaftAddress = n.cfg.RaftAdvertise
	}
	ticker := time.NewTicker(publishInterval)
	defer ticker.Stop()
	for {
		if meta, ok := n.fsm.Node(n.cfg.NodeID); !ok || meta.GRPCAddress != grpcAddr || meta.HTTPAddress != httpAddr {
			if err := n.publishOnce(req); err != nil {
				n.logPublishError(err)
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

// publishOnce takes one step towards this node's membership and address
// record: a node that is not yet a member asks its --join address to add
// it; the leader adds itself if needed and proposes its record through its
// own Raft; a follower asks the leader to do both (the leader's
// Cluster.Join).
func (n *Node) publishOnce(req *registryv1.JoinRequest) error {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if n.cfg.ACLToken != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+n.cfg.ACLToken)
	}
	if n.cfg.Join != "" && !n.isMember(ctx) {
		return n.joinVia(ctx, n.cfg.Join, req)
	}
	if n.IsLeader() {
		return n.publishAsLeader(ctx, req)
	}
	if _, ok := n.Leader(); !ok {
		return nil
	}
	cc, err := n.LeaderConn()
	if err != nil {
		return err
	}
	_, err = registryv1.NewClusterClient(cc).Join(ctx, req)
	return err
}

// joinVia asks the member at addr to add this node (as a voter, or as a
// read replica) and record its addresses.
func (n *Node) joinVia(ctx context.Context, addr string, req *registryv1.JoinRequest) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(n.conns.creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	if _, err := registryv1.NewClusterClient(cc).Join(ctx, req); err != nil {
		return err
	}
	n.log.Info("joined the cluster", "via", addr)
	return nil
}

// publishAsLeader makes sure the leader is a voter at its Raft address (a
// no-op unless that changed) and proposes its address record.
func (n *Node) publishAsLeader(ctx context.Context, req *registryv1.JoinRequest) error {
	if _, err := n.AddVoter(ctx, req.NodeId, req.RaftAddress); err != nil {
		return err
	}
	_, err := fsm.Propose[*fsm.NodeMetaResult](ctx, n, &fsmpb.NodeMeta{
		NodeId: req.NodeId, GrpcAddress: req.GrpcAddress, HttpAddress: req.HttpAddress,
	})
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

// logPublishError logs a failed publication step: a refusal by the ACLs at
// warning level (it needs the operator's action: an --acl-token with
// operator:write), anything else (no leader yet, a leader change) at debug
// level, as the next step retries it.
func (n *Node) logPublishError(err error) {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		n.log.Warn("cannot join or publish this node's addresses: the ACLs refuse it; set --acl-token to a token with operator:write",
			"error", err, "acl_token_set", n.cfg.ACLToken != "")
	default:
		n.log.Debug("publishing addresses", "error", err)
	}
}
