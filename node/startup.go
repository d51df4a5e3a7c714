package node

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Start-up steps, in the order they happen on a restart, as the "step"
// label of registry_startup_seconds and the "step" key of the log line
// "startup step". Each is the time since New began.
const (
	stepBoltOpened       = "bolt_opened"       // raft.db and the snapshot store are open
	stepSnapshotRestored = "snapshot_restored" // the fsm holds the latest snapshot (absent without one)
	stepRaftStarted      = "raft_started"      // raft.NewRaft returned; Raft serves its transport
	stepFirstContact     = "first_contact"     // the first message from a leader (a heartbeat, usually)
	stepFirstApply       = "first_apply"       // the first command applied from the log (replication resumed)
	stepCaughtUp         = "caught_up"         // applied a command the leader stamped after the first contact
)

// startupSteps records when each start-up step happened, once: the log and
// the metrics then tell where a restart's time goes (issue 16, item 6).
//
// caught_up is judged from the leader's timestamps in the commands: once
// this node applies one the leader stamped at or after this node's first
// contact (on this node's clock, so clock skew between the machines shifts
// it), it has applied everything the leader had proposed by then. On an
// idle cluster no such command comes, and caught_up is not reported.
type startupSteps struct {
	begin time.Time
	clock func() time.Time
	log   *slog.Logger

	raftStarted atomic.Bool  // first_apply counts only applies after NewRaft
	applied     atomic.Bool  // first_apply was recorded
	caughtUpAt  atomic.Int64 // unix ns of the first contact; 0: not waiting

	mu    sync.Mutex
	steps map[string]time.Duration
}

func newStartupSteps(clock func() time.Time, log *slog.Logger) *startupSteps {
	return &startupSteps{begin: clock(), clock: clock, log: log, steps: make(map[string]time.Duration)}
}

// record notes step now, unless it was noted before.
func (s *startupSteps) record(step string, attrs ...any) {
	since := s.clock().Sub(s.begin)
	s.mu.Lock()
	_, seen := s.steps[step]
	if !seen {
		s.steps[step] = since
	}
	s.mu.Unlock()
	if !seen {
		s.log.Info("startup step", append([]any{"step", step, "since_start", since}, attrs...)...)
	}
}

// snapshot returns the steps recorded so far.
func (s *startupSteps) snapshot() map[string]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Duration, len(s.steps))
	for k, v := range s.steps {
		out[k] = v
	}
	return out
}

// restored is the fsm's OnRestore: a restore before Raft has started is
// the one from disk.
func (s *startupSteps) restored(index uint64) {
	if !s.raftStarted.Load() {
		s.record(stepSnapshotRestored, "index", index)
	}
}

// started notes that raft.NewRaft returned, at the given applied index.
func (s *startupSteps) started(applied, lastLog uint64) {
	s.record(stepRaftStarted, "index", applied, "last_log_index", lastLog)
	s.raftStarted.Store(true)
}

// contact notes the first leader this node heard from.
func (s *startupSteps) contact(leader raft.ServerID) {
	now := s.clock()
	if s.caughtUpAt.CompareAndSwap(0, now.UnixNano()) {
		s.record(stepFirstContact, "leader_id", string(leader))
	}
}

// observeApplied is called for each applied command with the leader's
// stamp; it is on the apply path, so it costs two atomic loads once done.
func (s *startupSteps) observeApplied(unixNs int64) {
	if !s.raftStarted.Load() {
		return
	}
	if !s.applied.Load() && s.applied.CompareAndSwap(false, true) {
		s.record(stepFirstApply)
	}
	if at := s.caughtUpAt.Load(); at > 0 && unixNs >= at && s.caughtUpAt.CompareAndSwap(at, -1) {
		s.record(stepCaughtUp)
	}
}

// watchRaft consumes Raft's observations until the node stops: the first
// leader contact, and the ends of waits for unreachable peers (raftnet)
// when this node stops leading or a peer is removed.
func (n *Node) watchRaft(ch <-chan raft.Observation, obs *raft.Observer) {
	defer n.wg.Done()
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case <-n.ctx.Done():
			return
		case o := <-ch:
			switch d := o.Data.(type) {
			case raft.LeaderObservation:
				if d.LeaderID != "" && string(d.LeaderID) != n.cfg.NodeID {
					n.startup.contact(d.LeaderID)
				}
			case raft.RaftState:
				if d != raft.Leader && n.peerWait != nil {
					n.peerWait.CancelAll()
				}
			case raft.PeerObservation:
				if d.Removed && n.peerWait != nil {
					n.peerWait.Cancel(d.Peer.Address)
				}
			}
		}
	}
}

// startWatchingRaft registers the observer watchRaft reads. Raft never
// blocks on it: an observation that finds the channel full is dropped,
// and each kind it carries is rare.
func (n *Node) startWatchingRaft() {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	// Raft runs from NewRaft on: a leader may have been heard from before
	// the observer was registered.
	if _, id := n.raft.LeaderWithID(); id != "" && string(id) != n.cfg.NodeID {
		n.startup.contact(id)
	}
	n.wg.Add(1)
	go n.watchRaft(ch, obs)
}

// startupCollector exports the start-up steps.
type startupCollector struct{ n *Node }

var descStartup = prometheus.NewDesc("registry_startup_seconds",
	"Seconds from the start of this node (node.New) to each start-up step: bolt_opened, snapshot_restored, raft_started, first_contact (first message from a leader), first_apply (replication resumed), caught_up (applied a command the leader stamped after the first contact). A step not reached is absent.",
	[]string{"step"}, nil)

func (c startupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descStartup }

func (c startupCollector) Collect(ch chan<- prometheus.Metric) {
	if c.n.startup == nil {
		return
	}
	for step, d := range c.n.startup.snapshot() {
		ch <- prometheus.MustNewConstMetric(descStartup, prometheus.GaugeValue, d.Seconds(), step)
	}
}
