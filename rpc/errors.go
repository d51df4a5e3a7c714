package rpc

import (
	"context"
	"errors"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/validate"
)

var (
	// ErrNoLeader means no leader is known, or its address is not yet
	// published. Retryable.
	ErrNoLeader = errors.New("no leader is known")
	// ErrNotLeader means a request that must run on the leader reached
	// another node after it had already been forwarded once. Retryable.
	ErrNotLeader = errors.New("this node is not the leader")
	// ErrTooManyWatchers means the node serves its maximum of watches.
	ErrTooManyWatchers = errors.New("too many watchers on this node")
	// ErrShuttingDown means the node is stopping. Retryable elsewhere.
	ErrShuttingDown = errors.New("node is shutting down")
)

// toStatus maps every error that leaves the gRPC services to a status. It
// is the only such mapping: errors that already carry a status (from a
// forwarded call) pass through unchanged.
func (s *Server) toStatus(err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return err
	}
	switch {
	case errors.Is(err, validate.ErrInvalid), errors.Is(err, fsm.ErrBadSnapshot):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, fsm.ErrFenced):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrNotLeader), errors.Is(err, fsm.ErrLeadershipLost),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrNotVoter),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrAbortedByRestore),
		errors.Is(err, ErrShuttingDown), errors.Is(err, groupcommit.ErrClosed):
		return s.unavailable(err)
	case errors.Is(err, groupcommit.ErrOverloaded), errors.Is(err, ErrTooManyWatchers):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// unavailable builds an UNAVAILABLE status with a LeaderHint when a leader
// is known.
func (s *Server) unavailable(err error) error {
	st := status.New(codes.Unavailable, err.Error())
	id, ok := s.cluster.Leader()
	if !ok {
		return st.Err()
	}
	hint := &registryv1.LeaderHint{LeaderId: id}
	if meta, ok := s.state.Node(id); ok {
		hint.LeaderGrpcAddress = meta.GRPCAddress
		hint.LeaderHttpAddress = meta.HTTPAddress
	}
	if withHint, derr := st.WithDetails(hint); derr == nil {
		st = withHint
	}
	return st.Err()
}
