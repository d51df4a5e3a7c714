package rpc

import (
	"context"
	"errors"
	"strings"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/regcenter/registry/acl"
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
	// ErrNotMember means a node id is not in the Raft configuration.
	ErrNotMember = errors.New("not a member of the cluster")
	// ErrMembershipRefused means a configuration change would leave the
	// cluster unsafe or cannot apply to that member (demoting the leader or
	// below MinVotersAfterDemote voters, handing leadership to a replica).
	ErrMembershipRefused = errors.New("membership change refused")
	// ErrRateLimited means a client (its ACL token, or its address
	// without one) made more writes than Config.WriteRate allows; see
	// RateLimitedError for when to retry.
	ErrRateLimited = errors.New("too many writes from this client")
	// ErrTooManyClientWatches means a client (its ACL token, or its
	// address without one) has Config.MaxWatchesPerClient watches on this
	// node already.
	ErrTooManyClientWatches = errors.New("too many watches from this client")
)

// toStatus maps every error that leaves the gRPC services to a status. It
// is the only such mapping: errors that already carry a status (from a
// forwarded call) pass through unchanged, except that an UNAVAILABLE one
// without a WriteOutcome gets one. Every UNAVAILABLE carries a WriteOutcome
// detail (see proposed) and, when a leader is known, a LeaderHint.
func (s *Server) toStatus(err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if st := se.GRPCStatus(); st.Code() == codes.Unavailable && detailOf[*registryv1.WriteOutcome](st) == nil {
			return withDetails(st, &registryv1.WriteOutcome{Proposed: proposed(err)})
		}
		return err
	}
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, acl.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, fsm.ErrACLBootstrapped):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, fsm.ErrACLConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, validate.ErrInvalid), errors.Is(err, fsm.ErrBadSnapshot), errors.Is(err, acl.ErrInvalidPolicy):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrNotFound), errors.Is(err, ErrNotMember), errors.Is(err, fsm.ErrACLNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, fsm.ErrFenced), errors.Is(err, ErrMembershipRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrNotLeader), errors.Is(err, fsm.ErrLeadershipLost),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrNotVoter),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrAbortedByRestore),
		errors.Is(err, ErrShuttingDown), errors.Is(err, groupcommit.ErrClosed):
		return s.unavailable(err)
	case errors.Is(err, ErrRateLimited):
		var rl *RateLimitedError
		details := []protoadapt.MessageV1{}
		if errors.As(err, &rl) {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(rl.RetryAfter)})
		}
		return withDetails(status.New(codes.ResourceExhausted, err.Error()), details...)
	case errors.Is(err, groupcommit.ErrOverloaded), errors.Is(err, ErrTooManyWatchers), errors.Is(err, ErrTooManyClientWatches):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// proposed reports whether err, the cause of an UNAVAILABLE, may come after
// the write was proposed to Raft, so that it may yet be applied:
// leadership lost while committing, Raft shut down or a restore under way
// with the entry in flight, or a forwarded call that failed after it was
// sent. Everything else comes before any proposal: no leader known, not the
// leader (Raft's own ErrNotLeader appends nothing), a transfer under way, an
// enqueue timeout, this node stopping, or a forward that could not connect.
func proposed(err error) bool {
	switch {
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, raft.ErrAbortedByRestore):
		return true
	}
	if st, ok := status.FromError(err); ok {
		// gRPC's own status for a connection it could not make: the
		// request was never sent. Its text is all grpc-go gives.
		return !strings.Contains(st.Message(), dialFailure)
	}
	return false
}

// dialFailure is in the message of grpc-go's UNAVAILABLE for a call it could
// not send because the connection could not be established.
const dialFailure = "transport: Error while dialing"

// detailOf returns the first detail of st of type T, or T's zero value.
func detailOf[T any](st *status.Status) T {
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	var zero T
	return zero
}

// withDetails returns st with details added, or st alone if they cannot be
// encoded.
func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	if with, err := st.WithDetails(details...); err == nil {
		return with.Err()
	}
	return st.Err()
}

// unavailable builds an UNAVAILABLE status with a WriteOutcome and, when a
// leader is known, a LeaderHint.
func (s *Server) unavailable(err error) error {
	st := status.New(codes.Unavailable, err.Error())
	details := []protoadapt.MessageV1{&registryv1.WriteOutcome{Proposed: proposed(err)}}
	if hint := s.leaderHint(); hint != nil {
		details = append(details, hint)
	}
	return withDetails(st, details...)
}

// leaderHint describes the leader, or returns nil when none is known.
func (s *Server) leaderHint() *registryv1.LeaderHint {
	id, ok := s.cluster.Leader()
	if !ok {
		return nil
	}
	hint := &registryv1.LeaderHint{LeaderId: id}
	if meta, ok := s.state.Node(id); ok {
		hint.LeaderGrpcAddress = meta.GRPCAddress
		hint.LeaderHttpAddress = meta.HTTPAddress
	}
	return hint
}
