package rpc

import (
	"context"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

// Promote implements registry.v1.Cluster: the leader makes a read replica
// a voter.
func (s *Server) Promote(ctx context.Context, req *registryv1.PromoteRequest) (*registryv1.PromoteResponse, error) {
	if err := validate.Name("node_id", req.NodeId); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_Promote_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.PromoteResponse, error) {
			return registryv1.NewClusterClient(cc).Promote(ctx, req)
		})
	}
	index, err := s.admin.Promote(ctx, req.NodeId)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.PromoteResponse{Index: index}, nil
}

// Demote implements registry.v1.Cluster: the leader makes a voter a read
// replica, unless that is unsafe (ErrMembershipRefused).
func (s *Server) Demote(ctx context.Context, req *registryv1.DemoteRequest) (*registryv1.DemoteResponse, error) {
	if err := validate.Name("node_id", req.NodeId); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Cluster_Demote_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.DemoteResponse, error) {
			return registryv1.NewClusterClient(cc).Demote(ctx, req)
		})
	}
	index, err := s.admin.Demote(ctx, req.NodeId)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.DemoteResponse{Index: index}, nil
}
