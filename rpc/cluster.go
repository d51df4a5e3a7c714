package rpc

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/validate"
)

// Status implements registry.v1.Cluster. It answers from this node.
func (s *Server) Status(ctx context.Context, req *registryv1.StatusRequest) (*registryv1.StatusResponse, error) {
	st, err := s.admin.Status(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := toAPIStatus(st)
	if req.GetIncludeStateHash() {
		resp.StateHash, resp.StateHashIndex = s.state.HashIndex()
	}
	return resp, nil
}

// Join implements registry.v1.Cluster: it adds the node as a voter (unless
// it is one already at that address), or as a non-voter if it asks to be a
// read replica (unless it is a member already), and records its client
// addresses. A node calls it at start-up, on itself, to publish its
// addresses.
func (s *Server) Join(ctx context.Context, req *registryv1.JoinRequest) (*registryv1.JoinResponse, error) {
	if err := validate.Name("node_id", req.NodeId); err != nil {
		return nil, s.toStatus(err)
	}
	if req.RaftAddress == "" {
		return nil, s.toStatus(validate.FieldErrorf("raft_address", "must not be empty (host:port)"))
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_Join_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.JoinResponse, error) {
			return registryv1.NewClusterClient(cc).Join(ctx, req)
		})
	}
	add := s.admin.AddVoter
	if req.ReadReplica {
		add = s.admin.AddNonvoter
	}
	index, err := add(ctx, req.NodeId, req.RaftAddress)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if req.GrpcAddress != "" || req.HttpAddress != "" {
		if meta, ok := s.state.Node(req.NodeId); !ok || meta.GRPCAddress != req.GrpcAddress || meta.HTTPAddress != req.HttpAddress {
			res, err := fsm.Propose[*fsm.NodeMetaResult](ctx, s.applier, &fsmpb.NodeMeta{
				NodeId: req.NodeId, GrpcAddress: req.GrpcAddress, HttpAddress: req.HttpAddress,
			})
			if err != nil {
				return nil, s.toStatus(err)
			}
			index = res.Index
		}
	}
	return &registryv1.JoinResponse{Index: index}, nil
}

// Remove implements registry.v1.Cluster. A node id that is neither in the
// Raft configuration nor recorded with addresses is NOT_FOUND.
func (s *Server) Remove(ctx context.Context, req *registryv1.RemoveRequest) (*registryv1.RemoveResponse, error) {
	if err := validate.Name("node_id", req.NodeId); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_Remove_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.RemoveResponse, error) {
			return registryv1.NewClusterClient(cc).Remove(ctx, req)
		})
	}
	index, err := s.admin.RemoveServer(ctx, req.NodeId)
	_, recorded := s.state.Node(req.NodeId)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotMember) && recorded:
		// Removed before, by a leader that lost leadership before it
		// cleared the address record: clear it now.
	default:
		return nil, s.toStatus(err)
	}
	if recorded {
		// A removed leader may have lost leadership by now; its
		// address record is then left for the next Remove or Join.
		res, aerr := fsm.Propose[*fsm.NodeMetaResult](ctx, s.applier, &fsmpb.NodeMeta{NodeId: req.NodeId})
		switch {
		case aerr == nil:
			index = res.Index
		case err != nil: // the record was all there was to remove
			return nil, s.toStatus(aerr)
		}
	}
	return &registryv1.RemoveResponse{Index: index}, nil
}

// TransferLeadership implements registry.v1.Cluster.
func (s *Server) TransferLeadership(ctx context.Context, req *registryv1.TransferLeadershipRequest) (*registryv1.TransferLeadershipResponse, error) {
	if req.NodeId != "" {
		if err := validate.Name("node_id", req.NodeId); err != nil {
			return nil, s.toStatus(err)
		}
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_TransferLeadership_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.TransferLeadershipResponse, error) {
			return registryv1.NewClusterClient(cc).TransferLeadership(ctx, req)
		})
	}
	id, err := s.admin.TransferLeadership(ctx, req.NodeId)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.TransferLeadershipResponse{LeaderId: id}, nil
}

// ReleaseExpiryGuard implements registry.v1.Cluster.
func (s *Server) ReleaseExpiryGuard(ctx context.Context, req *registryv1.ReleaseExpiryGuardRequest) (*registryv1.ReleaseExpiryGuardResponse, error) {
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_ReleaseExpiryGuard_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ReleaseExpiryGuardResponse, error) {
			return registryv1.NewClusterClient(cc).ReleaseExpiryGuard(ctx, req)
		})
	}
	engaged, held, err := s.admin.ReleaseExpiryGuard(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.ReleaseExpiryGuardResponse{WasEngaged: engaged, Held: uint32(held)}, nil
}
