package node

import (
	"context"
	"time"
)

// runLeadership consumes Raft's leadership signal and owns at most one run
// of the leader duties: it starts them on gaining leadership and, on losing
// it, cancels them and waits before doing anything else. A true while
// already leading means leadership was lost and regained in between: the
// duties restart for the new term.
func (n *Node) runLeadership() {
	defer n.wg.Done()
	var (
		cancel context.CancelFunc
		done   chan struct{}
	)
	stop := func() {
		if cancel != nil {
			cancel()
			<-done
			cancel, done = nil, nil
		}
	}
	defer stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-n.raft.LeaderCh():
			stop()
			if !isLeader {
				n.log.Info("lost leadership", "term", n.raft.CurrentTerm())
				continue
			}
			ctx, stopDuties := context.WithCancel(n.ctx)
			cancel, done = stopDuties, make(chan struct{})
			go func() {
				defer close(done)
				n.leaderDuties(ctx)
			}()
		}
	}
}

// leaderDuties runs while this node leads. It first commits a barrier, so
// that everything from earlier terms is applied before it acts as leader,
// then runs the expiry checker until leadership ends.
func (n *Node) leaderDuties(ctx context.Context) {
	term := n.raft.CurrentTerm()
	for {
		err := waitFuture(ctx, n.raft.Barrier(defaultTimeout))
		if err == nil {
			break
		}
		if ctx.Err() != nil || !n.IsLeader() {
			return
		}
		n.log.Warn("leader barrier failed; retrying", "term", term, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Everything from earlier terms is applied: continue from the previous
	// leader's time base if it is ahead of this node's clock.
	offset := n.clock.adopt()
	n.log.Info("leading", "term", term, "index", n.raft.AppliedIndex(), "clock_offset", offset.String())
	n.bootstrapACLs(ctx)
	// Promoted now: the checker's failover fence starts here, after the
	// barrier, so it also covers the time the barrier took.
	n.checker.Run(ctx, n.clock.now())
}
