package rpc

import (
	"context"
	"encoding/base64"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/validate"
)

// Register implements registry.v1.Registry. The write joins the write
// group commit on any node: the leader commits it, a follower forwards it
// to the leader with the other writes of its batch (forwardwrites.go).
func (s *Server) Register(ctx context.Context, req *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	in, err := validate.NormalizeRegister(req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() && forwarded(ctx) {
		return nil, s.toStatus(ErrNotLeader) // never forwarded twice
	}
	out, err := s.submitWrite(ctx, writeItem{
		reg:           registerCmd(in),
		forwarded:     forwarded(ctx),
		authorization: incomingAuthorization(ctx),
	})
	if err == nil {
		err = out.err
	}
	if err != nil {
		return nil, s.toStatus(err)
	}
	return out.reg, nil
}

// Deregister implements registry.v1.Registry, as Register does.
func (s *Server) Deregister(ctx context.Context, req *registryv1.DeregisterRequest) (*registryv1.DeregisterResponse, error) {
	if err := validate.Deregister(req); err != nil {
		return nil, s.toStatus(err)
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() && forwarded(ctx) {
		return nil, s.toStatus(ErrNotLeader)
	}
	out, err := s.submitWrite(ctx, writeItem{
		dereg:         deregisterCmd(req),
		forwarded:     forwarded(ctx),
		authorization: incomingAuthorization(ctx),
	})
	if err == nil {
		err = out.err
	}
	if err != nil {
		return nil, s.toStatus(err)
	}
	return out.dereg, nil
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
	if req.PageSize > validate.MaxPageSize {
		return nil, s.toStatus(validate.FieldErrorf("page_size", "%d is above the limit of %d", req.PageSize, validate.MaxPageSize))
	}
	after, err := decodePageToken(req.PageToken)
	if err != nil {
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
	page, next := servicePage(ins, req.IncludeSuspect, after, int(req.PageSize))
	return &registryv1.GetServiceResponse{
		Instances:     page,
		Index:         index,
		KnownLeader:   s.knownLeader(),
		NextPageToken: next,
	}, nil
}

// decodePageToken returns the instance id a GetService page token names
// (empty for no token). The token is the base64url of the previous page's
// last id: opaque to callers, checked like any id.
func decodePageToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	id, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || validate.Name("page_token", string(id)) != nil {
		return "", validate.FieldErrorf("page_token", "is not a token from a GetService response")
	}
	return string(id), nil
}

// servicePage returns the instances (sorted by id) after the id after, at
// most size of them (0: no count limit) and at most validate.MaxPageBytes
// encoded, with the token of the next page if any remain.
func servicePage(ins []fsm.Instance, includeSuspect bool, after string, size int) ([]*registryv1.Instance, string) {
	start, _ := slices.BinarySearchFunc(ins, after, func(in fsm.Instance, id string) int {
		if in.ID <= id {
			return -1
		}
		return 1
	})
	capacity := len(ins) - start
	if size > 0 {
		capacity = min(capacity, size)
	}
	out := make([]*registryv1.Instance, 0, capacity)
	bytes := 0
	for i := start; i < len(ins); i++ {
		if !includeSuspect && ins[i].State != fsm.StateHealthy {
			continue
		}
		in := toAPIInstance(&ins[i])
		n := proto.Size(in) + 8 // the field's tag and length
		if len(out) > 0 && ((size > 0 && len(out) == size) || bytes+n > validate.MaxPageBytes) {
			return out, base64.RawURLEncoding.EncodeToString([]byte(out[len(out)-1].Id))
		}
		out = append(out, in)
		bytes += n
	}
	return out, ""
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
