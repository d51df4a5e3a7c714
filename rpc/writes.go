package rpc

import (
	"context"
	"fmt"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/groupcommit"
)

// defaultWriteWindow is the default Config.Writes.Window. Registrations
// wait for each other far less than beats: the window only spaces the
// flushes of a busy node (up to defaultWriteInflight flushes are in
// flight, and the next one gathers every write that arrived meanwhile);
// an idle node flushes a lone write at once.
const defaultWriteWindow = time.Millisecond

// defaultWriteInflight is the default Config.Writes.MaxInflight: a busy
// leader proposes a new write batch while earlier ones replicate (Raft
// pipelines them), rather than waiting a whole commit round per batch.
const defaultWriteInflight = 4

// defaultWrites returns the default Config.Writes: groupcommit's defaults
// with the write window and flushes in flight.
func defaultWrites() groupcommit.Config {
	c := groupcommit.DefaultConfig()
	c.Window = defaultWriteWindow
	c.MaxInflight = defaultWriteInflight
	return c
}

// writeItem is one validated Register or Deregister waiting for the write
// group commit: exactly one of reg and dereg is set. The flush stamps its
// time.
type writeItem struct {
	reg   *fsmpb.Register
	dereg *fsmpb.Deregister
}

// writeOutcome is the result of one write: what Apply answered for it
// alone, or its own error.
type writeOutcome struct {
	reg   *fsm.RegisterResult
	dereg *fsm.DeregisterResult
	err   error
}

// proposeRegister commits a validated registration on the leader, in a
// group commit with the writes that arrive meanwhile, and returns the
// FSM's result for it or its own error (fenced: fsm.ErrFenced).
func (s *Server) proposeRegister(ctx context.Context, cmd *fsmpb.Register) (*fsm.RegisterResult, error) {
	out, err := s.writes.Submit(ctx, []writeItem{{reg: cmd}})
	if err != nil {
		return nil, err
	}
	return out[0].reg, out[0].err
}

// proposeDeregister is proposeRegister for a deregistration (absent:
// fsm.ErrNotFound; another incarnation: fsm.ErrFenced).
func (s *Server) proposeDeregister(ctx context.Context, cmd *fsmpb.Deregister) (*fsm.DeregisterResult, error) {
	out, err := s.writes.Submit(ctx, []writeItem{{dereg: cmd}})
	if err != nil {
		return nil, err
	}
	return out[0].dereg, out[0].err
}

// flushWrites is the write group commit's flush. It stamps the leader's
// time into every write, then proposes a lone write as the Register or
// Deregister command it always was, and several as one WriteBatch, which
// the FSM applies in order, each write on its own. An error of the
// proposal itself (not the leader any more, a timeout) fails every write
// of the batch, as it would have failed each alone.
func (s *Server) flushWrites(ctx context.Context, items []writeItem) ([]writeOutcome, error) {
	now := s.now()
	for _, it := range items {
		if it.reg != nil {
			it.reg.NowUnixNs = now
		} else {
			it.dereg.NowUnixNs = now
		}
	}
	s.metrics.writeBatchSize.Observe(float64(len(items)))
	out := make([]writeOutcome, len(items))
	if len(items) == 1 {
		o := &out[0]
		if it := items[0]; it.reg != nil {
			o.reg, o.err = fsm.Propose[*fsm.RegisterResult](ctx, s.applier, it.reg)
		} else {
			o.dereg, o.err = fsm.Propose[*fsm.DeregisterResult](ctx, s.applier, it.dereg)
		}
		return out, nil
	}
	// One allocation for every write of the batch, not one per write.
	writes := make([]fsmpb.Write, len(items))
	cmd := &fsmpb.WriteBatch{Writes: make([]*fsmpb.Write, len(items))}
	for i, it := range items {
		w := &writes[i]
		if it.reg != nil {
			w.Op = &fsmpb.Write_Register{Register: it.reg}
		} else {
			w.Op = &fsmpb.Write_Deregister{Deregister: it.dereg}
		}
		cmd.Writes[i] = w
	}
	res, err := fsm.Propose[*fsm.WriteBatchResult](ctx, s.applier, cmd)
	if err != nil {
		return nil, err
	}
	if len(res.Results) != len(items) {
		return nil, fmt.Errorf("write batch at index %d: %d results for %d writes", res.Index, len(res.Results), len(items))
	}
	for i, r := range res.Results {
		out[i] = writeOutcome{reg: r.Register, dereg: r.Deregister, err: r.Err}
	}
	return out, nil
}
