package rpc

import (
	"context"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/validate"
)

// Register implements registry.v1.Registry.
func (s *Server) Register(ctx context.Context, req *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	in, err := validate.NormalizeRegister(req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Registry_Register_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.RegisterResponse, error) {
			return registryv1.NewRegistryClient(cc).Register(ctx, req)
		})
	}
	res, err := s.proposeRegister(ctx, &fsmpb.Register{
		Service:        in.Service,
		Id:             in.Id,
		Address:        in.Address,
		Metadata:       in.Metadata,
		Incarnation:    in.Incarnation,
		BeatIntervalNs: int64(in.BeatInterval.AsDuration()),
		SuspectAfterNs: int64(in.SuspectAfter.AsDuration()),
		TtlNs:          int64(in.Ttl.AsDuration()),
	})
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.RegisterResponse{Instance: toAPIInstance(&res.Instance), Index: res.Index}, nil
}

// Deregister implements registry.v1.Registry.
func (s *Server) Deregister(ctx context.Context, req *registryv1.DeregisterRequest) (*registryv1.DeregisterResponse, error) {
	if err := validate.Deregister(req); err != nil {
		return nil, s.toStatus(err)
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return forward(ctx, s, registryv1.Registry_Deregister_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.DeregisterResponse, error) {
			return registryv1.NewRegistryClient(cc).Deregister(ctx, req)
		})
	}
	res, err := s.proposeDeregister(ctx, &fsmpb.Deregister{
		Service:     req.Service,
		Id:          req.Id,
		Incarnation: req.Incarnation,
	})
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &registryv1.DeregisterResponse{Index: res.Index}, nil
}

// readLocally decides where a read runs: it returns true when this node may
// answer from its own replica at the requested consistency (after the read
// barrier, for LINEARIZABLE), and false when the caller must forward.
func (s *Server) readLocally(ctx context.Context, c registryv1.Consistency) (bool, error) {
	switch c {
	case registryv1.Consistency_CONSISTENCY_STALE:
		return true, nil
	case registryv1.Consistency_CONSISTENCY_DEFAULT:
		return s.cluster.IsLeader(), nil
	case registryv1.Consistency_CONSISTENCY_LINEARIZABLE:
		if !s.cluster.IsLeader() {
			return false, nil
		}
		return true, s.cluster.ReadBarrier(ctx)
	default:
		return false, validate.FieldErrorf("consistency", "unknown value %d", int32(c))
	}
}

func (s *Server) knownLeader() bool {
	_, ok := s.cluster.Leader()
	return ok
}

// GetService implements registry.v1.Registry.
func (s *Server) GetService(ctx context.Context, req *registryv1.GetServiceRequest) (*registryv1.GetServiceResponse, error) {
	if err := validate.Service("service", req.Service, false); err != nil {
		return nil, s.toStatus(err)
	}
	local, err := s.readLocally(ctx, req.Consistency)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if !local {
		return forward(ctx, s, registryv1.Registry_GetService_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.GetServiceResponse, error) {
			return registryv1.NewRegistryClient(cc).GetService(ctx, req)
		})
	}
	ins, index := s.state.GetService(req.Service, req.IncludeSuspect)
	return &registryv1.GetServiceResponse{
		Instances:   toAPIInstances(ins, req.IncludeSuspect),
		Index:       index,
		KnownLeader: s.knownLeader(),
	}, nil
}

// ListServices implements registry.v1.Registry.
func (s *Server) ListServices(ctx context.Context, req *registryv1.ListServicesRequest) (*registryv1.ListServicesResponse, error) {
	local, err := s.readLocally(ctx, req.Consistency)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if !local {
		return forward(ctx, s, registryv1.Registry_ListServices_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ListServicesResponse, error) {
			return registryv1.NewRegistryClient(cc).ListServices(ctx, req)
		})
	}
	sums, index := s.state.ListServices()
	out := &registryv1.ListServicesResponse{Index: index, KnownLeader: s.knownLeader()}
	canRead := readFilter(ctx) // with ACLs: only what the token may read
	for _, sum := range sums {
		if !canRead(sum.Service) {
			continue
		}
		out.Services = append(out.Services, &registryv1.ServiceSummary{
			Service: sum.Service,
			Healthy: uint32(sum.Healthy),
			Suspect: uint32(sum.Suspect),
		})
	}
	return out, nil
}
