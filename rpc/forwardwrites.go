package rpc

import (
	"context"
	"fmt"
	"strings"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/validate"
)

// Batched forwarding of writes. A follower's write group commit gathers
// the Register and Deregister calls that arrive together, as the leader's
// does, and its flush forwards them to the leader in one ForwardWrites
// call per caller token (one call when ACLs are off), as the beat group
// commit forwards beats (forwardBeats). The leader checks each write as if
// it had come alone: it validates it again, checks its service against the
// call's token and, for a caller that is not a member, counts it against
// the caller's write rate; then it commits the writes in its own group
// commit and answers each on its own, so one invalid, refused or fenced
// write does not fail its neighbours. A write forwarded to a node is never
// forwarded again: a leader that lost leadership refuses it (ErrNotLeader)
// rather than passing it on.

const (
	// maxForwardWrites bounds the writes of one ForwardWrites call.
	maxForwardWrites = validate.MaxBeatBatch
	// maxForwardBytes bounds the encoded writes of one ForwardWrites call,
	// well under gRPC's default 4 MiB message limit (the answers are about
	// as large as the requests).
	maxForwardBytes = 1 << 20
)

// registerCmd is the Register command of a validated instance.
func registerCmd(in *registryv1.Instance) *fsmpb.Register {
	return &fsmpb.Register{
		Service:        in.Service,
		Id:             in.Id,
		Address:        in.Address,
		Metadata:       in.Metadata,
		Incarnation:    in.Incarnation,
		BeatIntervalNs: int64(in.BeatInterval.AsDuration()),
		SuspectAfterNs: int64(in.SuspectAfter.AsDuration()),
		TtlNs:          int64(in.Ttl.AsDuration()),
	}
}

// deregisterCmd is the Deregister command of a validated request.
func deregisterCmd(req *registryv1.DeregisterRequest) *fsmpb.Deregister {
	return &fsmpb.Deregister{Service: req.Service, Id: req.Id, Incarnation: req.Incarnation}
}

// forwardedWrite is the request a follower forwards for a write: the
// validated registration with its defaults filled in, which validates to
// the same command on the leader.
func forwardedWrite(it writeItem) *registryv1.ForwardedWrite {
	if r := it.reg; r != nil {
		return &registryv1.ForwardedWrite{Op: &registryv1.ForwardedWrite_Register{Register: &registryv1.RegisterRequest{
			Instance: &registryv1.Instance{
				Service:      r.Service,
				Id:           r.Id,
				Address:      r.Address,
				Metadata:     r.Metadata,
				Incarnation:  r.Incarnation,
				BeatInterval: durationpb.New(time.Duration(r.BeatIntervalNs)),
				SuspectAfter: durationpb.New(time.Duration(r.SuspectAfterNs)),
				Ttl:          durationpb.New(time.Duration(r.TtlNs)),
			},
		}}}
	}
	d := it.dereg
	return &registryv1.ForwardedWrite{Op: &registryv1.ForwardedWrite_Deregister{Deregister: &registryv1.DeregisterRequest{
		Service: d.Service, Id: d.Id, Incarnation: d.Incarnation,
	}}}
}

// forwardWrites forwards a follower's batch to the leader and returns each
// write's outcome: a write forwarded to this node already fails with
// ErrNotLeader; the others go in one call per caller token (split to stay
// under maxForwardWrites and maxForwardBytes), and a call that fails as a
// whole fails each of its writes with its error.
func (s *Server) forwardWrites(ctx context.Context, items []writeItem) []writeOutcome {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	out := make([]writeOutcome, len(items))
	groups := make(map[string][]int) // authorization → positions in items
	var order []string
	for i, it := range items {
		if it.forwarded {
			out[i].err = ErrNotLeader
			continue
		}
		if _, ok := groups[it.authorization]; !ok {
			order = append(order, it.authorization)
		}
		groups[it.authorization] = append(groups[it.authorization], i)
	}
	for _, auth := range order {
		pos := groups[auth]
		for len(pos) > 0 {
			req := &registryv1.ForwardWritesRequest{}
			size := 0
			n := 0
			for ; n < len(pos) && n < maxForwardWrites; n++ {
				w := forwardedWrite(items[pos[n]])
				sz := proto.Size(w)
				if n > 0 && size+sz > maxForwardBytes {
					break
				}
				req.Writes = append(req.Writes, w)
				size += sz
			}
			s.forwardWriteCall(ctx, auth, req, pos[:n], out)
			pos = pos[n:]
		}
	}
	return out
}

// forwardWriteCall makes one ForwardWrites call under auth and sets the
// outcomes of the writes at pos.
func (s *Server) forwardWriteCall(ctx context.Context, auth string, req *registryv1.ForwardWritesRequest, pos []int, out []writeOutcome) {
	fail := func(err error) {
		for _, p := range pos {
			out[p].err = err
		}
	}
	fctx, conn, err := s.toLeaderAs(ctx, registryv1.Registry_ForwardWrites_FullMethodName, auth)
	if err != nil {
		fail(err)
		return
	}
	resp, err := registryv1.NewRegistryClient(conn).ForwardWrites(fctx, req)
	if err != nil {
		fail(err)
		return
	}
	if len(resp.Results) != len(pos) {
		fail(fmt.Errorf("forwarded writes: the leader answered %d of %d", len(resp.Results), len(pos)))
		return
	}
	for j, r := range resp.Results {
		o := &out[pos[j]]
		switch v := r.Result.(type) {
		case *registryv1.ForwardedWriteResult_Register:
			o.reg = v.Register
		case *registryv1.ForwardedWriteResult_Deregister:
			o.dereg = v.Deregister
		case *registryv1.ForwardedWriteResult_Error:
			o.err = status.ErrorProto(&spb.Status{Code: v.Error.Code, Message: v.Error.Message, Details: v.Error.Details})
		}
		if isReg := req.Writes[j].GetRegister() != nil; o.err == nil && (isReg && o.reg == nil || !isReg && o.dereg == nil) {
			o.err = fmt.Errorf("forwarded writes: the leader's answer %d is not of its write's kind", j)
		}
	}
}

// ForwardWrites implements registry.v1.Registry: the leader's end of
// forwardWrites. It trusts no follower: each write is validated,
// authorized against the call's token (with ACLs on) and, for a caller
// that is not a member, counted against its write rate, on its own; the
// writes that pass are committed in the write group commit.
func (s *Server) ForwardWrites(ctx context.Context, req *registryv1.ForwardWritesRequest) (*registryv1.ForwardWritesResponse, error) {
	if n := len(req.GetWrites()); n == 0 || n > maxForwardWrites {
		return nil, s.toStatus(validate.FieldErrorf("writes", "has %d writes, want 1 to %d", n, maxForwardWrites))
	}
	if !s.cluster.IsLeader() {
		return nil, s.toStatus(ErrNotLeader) // never forwarded twice
	}
	id, aclOn, err := identityFrom(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	_, counted := s.client(ctx)
	results := make([]*registryv1.ForwardedWriteResult, len(req.Writes))
	batch := make([]writeItem, 0, len(req.Writes))
	pos := make([]int, 0, len(req.Writes))
	for i, w := range req.Writes {
		it, service, err := forwardedItem(w)
		if err == nil && aclOn {
			err = id.Authz.ServiceWrite(service).Err()
		}
		if err == nil && counted {
			err = s.admitWrite(ctx)
		}
		if err != nil {
			results[i] = s.writeError(err)
			continue
		}
		batch = append(batch, it)
		pos = append(pos, i)
	}
	if len(batch) > 0 {
		outs, err := s.writes.Submit(ctx, batch)
		if err != nil {
			return nil, s.toStatus(err)
		}
		for j, o := range outs {
			switch {
			case o.err != nil:
				results[pos[j]] = s.writeError(o.err)
			case o.reg != nil:
				results[pos[j]] = &registryv1.ForwardedWriteResult{Result: &registryv1.ForwardedWriteResult_Register{Register: o.reg}}
			default:
				results[pos[j]] = &registryv1.ForwardedWriteResult{Result: &registryv1.ForwardedWriteResult_Deregister{Deregister: o.dereg}}
			}
		}
	}
	return &registryv1.ForwardWritesResponse{Results: results}, nil
}

// forwardedItem validates one forwarded write as Register or Deregister
// would and returns it as a write marked forwarded, with its service.
func forwardedItem(w *registryv1.ForwardedWrite) (writeItem, string, error) {
	switch op := w.GetOp().(type) {
	case *registryv1.ForwardedWrite_Register:
		in, err := validate.NormalizeRegister(op.Register)
		if err != nil {
			return writeItem{}, "", err
		}
		return writeItem{reg: registerCmd(in), forwarded: true}, in.Service, nil
	case *registryv1.ForwardedWrite_Deregister:
		if err := validate.Deregister(op.Deregister); err != nil {
			return writeItem{}, "", err
		}
		return writeItem{dereg: deregisterCmd(op.Deregister), forwarded: true}, op.Deregister.Service, nil
	default:
		return writeItem{}, "", validate.FieldErrorf("op", "is neither register nor deregister")
	}
}

// writeError answers one write with the status err maps to.
func (s *Server) writeError(err error) *registryv1.ForwardedWriteResult {
	p := status.Convert(s.toStatus(err)).Proto()
	return &registryv1.ForwardedWriteResult{Result: &registryv1.ForwardedWriteResult_Error{Error: &registryv1.WriteError{
		Code: p.Code, Message: p.Message, Details: p.Details,
	}}}
}

// forwardAuditTarget names the writes of a ForwardWrites call for its
// audit line: service/id of each, comma-separated.
func forwardAuditTarget(req, _ any) string {
	ws := req.(*registryv1.ForwardWritesRequest).GetWrites()
	names := make([]string, len(ws))
	for i, w := range ws {
		if r := w.GetRegister(); r != nil {
			names[i] = r.GetInstance().GetService() + "/" + r.GetInstance().GetId()
		} else {
			names[i] = w.GetDeregister().GetService() + "/" + w.GetDeregister().GetId()
		}
	}
	return strings.Join(names, ",")
}
