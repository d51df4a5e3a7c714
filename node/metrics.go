package node

import (
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/udpbeat"
)

// Metrics counts the liveness transitions this node applies. Every node
// applies the same log, so every node counts the same (since it started,
// entries replayed at start-up included).
type Metrics struct {
	suspects        prometheus.Counter
	reacquisitions  prometheus.Counter
	deregistrations *prometheus.CounterVec
	// proposedEntries and proposedBytes count the commands this node
	// proposed to Raft as the leader, by command type: the log's growth.
	proposedEntries *prometheus.CounterVec
	proposedBytes   *prometheus.CounterVec
}

// NewMetrics returns the node's counters, registered with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		suspects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_suspects_total",
			Help: "Instances marked SUSPECT (no beat for suspect_after, or held by the mass-expiry guard), as applied by this node.",
		}),
		reacquisitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_reacquisitions_total",
			Help: "SUSPECT instances that beat again and became HEALTHY, as applied by this node.",
		}),
		deregistrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_deregistrations_total",
			Help: "Instances removed, as applied by this node, by reason: client (a Deregister call) or expired (no beat for its ttl: an expiration).",
		}, []string{"reason"}),
	}
	m.proposedEntries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_raft_proposed_entries_total",
		Help: "Commands this node proposed to the Raft log while leading, by command type (committed or not).",
	}, []string{"type"})
	m.proposedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_raft_proposed_bytes_total",
		Help: "Bytes of the commands this node proposed to the Raft log while leading, by command type: with registry_raft_proposed_entries_total, the bytes per entry.",
	}, []string{"type"})
	m.deregistrations.WithLabelValues("client")
	m.deregistrations.WithLabelValues("expired")
	reg.MustRegister(m.suspects, m.reacquisitions, m.deregistrations, m.proposedEntries, m.proposedBytes)
	return m
}

// observeProposal counts one command proposed to Raft.
func (m *Metrics) observeProposal(t fsm.MessageType, bytes int) {
	name := t.String()
	m.proposedEntries.WithLabelValues(name).Inc()
	m.proposedBytes.WithLabelValues(name).Add(float64(bytes))
}

// observeEvents is the fsm's ObserveEvents hook.
func (m *Metrics) observeEvents(events []fsm.Event) {
	for _, ev := range events {
		switch ev.Type {
		case fsm.EventSuspect:
			m.suspects.Inc()
		case fsm.EventReacquired:
			m.reacquisitions.Inc()
		case fsm.EventDeregistered:
			m.deregistrations.WithLabelValues("client").Inc()
		case fsm.EventExpired:
			m.deregistrations.WithLabelValues("expired").Inc()
		}
	}
}

// newRegistry builds the node's registry: the Go and process collectors,
// gRPC server metrics (grpc is the server they instrument), the services'
// metrics, the node's counters and the scrape-time collector.
func (n *Node) newRegistry() (*prometheus.Registry, *grpcprom.ServerMetrics, *rpc.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
	))
	reg.MustRegister(grpcMetrics, &collector{n: n}, tlsCollector{n}, startupCollector{n})
	n.metrics = NewMetrics(reg)
	n.registerDNSMetrics(reg)
	n.udp.metrics = udpbeat.NewMetrics(reg)
	return reg, grpcMetrics, rpc.NewMetrics(reg)
}

// collector reads Raft, the fsm, the checker and the skew estimate at
// scrape time. It calls only Raft accessors that read atomics (State,
// CurrentTerm, LastIndex, ...), none that waits for Raft's main loop, and
// takes the last snapshot from the node's snapshot store.
type collector struct{ n *Node }

var (
	descInstances = prometheus.NewDesc("registry_instances",
		"Registered instances by service and state (healthy or suspect), in this node's replica.", []string{"service", "state"}, nil)
	descServices = prometheus.NewDesc("registry_services",
		"Services with at least one registered instance, in this node's replica.", nil, nil)
	descCheckerRunning = prometheus.NewDesc("registry_checker_running",
		"1 on the leader, whose expiry checker runs; 0 elsewhere.", nil, nil)
	descGuardActive = prometheus.NewDesc("registry_expiry_guard_active",
		"1 while the mass-expiry guard holds expiries back (on the leader).", nil, nil)
	descGuardReleased = prometheus.NewDesc("registry_expiry_guard_released",
		"1 while an operator's release lets the guard's held expiries go (on the leader).", nil, nil)
	descGuardHeld = prometheus.NewDesc("registry_expiry_guard_held_instances",
		"Expiries the mass-expiry guard held at the leader's last sweep.", nil, nil)
	descFence = prometheus.NewDesc("registry_failover_fence_remaining_seconds",
		"How long the leader's failover or stall fence still protects instances from being suspected or removed (plus each instance's beat interval).", nil, nil)
	descSkew = prometheus.NewDesc("registry_clock_skew_seconds",
		"This node's clock minus the leader's, estimated from the leader's timestamps in the commands applied over the last 10s (0 on the leader; absent when nothing was applied).", nil, nil)
	descRole = prometheus.NewDesc("registry_raft_role",
		"1 for this node's current Raft role (follower, candidate, leader or shutdown), 0 for the others.", []string{"role"}, nil)
	descTerm = prometheus.NewDesc("registry_raft_term",
		"This node's current Raft term.", nil, nil)
	descHasLeader = prometheus.NewDesc("registry_raft_has_leader",
		"1 when this node knows a leader.", nil, nil)
	descLeader = prometheus.NewDesc("registry_raft_leader_info",
		"1, labelled with the id of the leader this node knows; absent when it knows none.", []string{"leader_id"}, nil)
	descLastContact = prometheus.NewDesc("registry_raft_last_contact_seconds",
		"Time since this follower last heard from the leader (0 on the leader; absent before the first contact).", nil, nil)
	descApplied = prometheus.NewDesc("registry_raft_applied_index",
		"The last Raft index this node applied.", nil, nil)
	descCommit = prometheus.NewDesc("registry_raft_commit_index",
		"The last Raft index this node knows to be committed.", nil, nil)
	descVoter = prometheus.NewDesc("registry_raft_voter",
		"1 while this node is a voter in its latest Raft configuration, 0 while it is a read replica (a non-voter); absent while it is not a member.", nil, nil)
	descLastLog = prometheus.NewDesc("registry_raft_last_log_index",
		"The last Raft index in this node's log.", nil, nil)
	descSnapshotIndex = prometheus.NewDesc("registry_raft_last_snapshot_index",
		"The Raft index of this node's latest snapshot.", nil, nil)
	descSnapshotAge = prometheus.NewDesc("registry_raft_snapshot_age_seconds",
		"Time since this node last wrote a snapshot (taken, installed from the leader or restored); absent when it has none.", nil, nil)
)

var raftRoles = []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInstances, descServices, descCheckerRunning, descGuardActive,
		descGuardReleased, descGuardHeld, descFence, descSkew, descRole, descTerm, descHasLeader, descLeader,
		descLastContact, descApplied, descCommit, descLastLog, descSnapshotIndex, descSnapshotAge, descVoter} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	services, _ := n.fsm.ListServices()
	for _, s := range services {
		gauge(descInstances, float64(s.Healthy), s.Service, "healthy")
		gauge(descInstances, float64(s.Suspect), s.Service, "suspect")
	}
	gauge(descServices, float64(len(services)))

	st := n.checker.Status()
	gauge(descCheckerRunning, bit(st.Running))
	gauge(descGuardActive, bit(st.GuardEngaged))
	gauge(descGuardReleased, bit(st.Released))
	gauge(descGuardHeld, float64(st.Held))
	gauge(descFence, st.FenceRemaining.Seconds())

	role := n.raft.State()
	if role == raft.Leader {
		gauge(descSkew, 0)
	} else if skew, ok := n.skew.estimate(); ok {
		gauge(descSkew, skew.Seconds())
	}
	for _, r := range raftRoles {
		gauge(descRole, bit(r == role), strings.ToLower(r.String()))
	}
	gauge(descTerm, float64(n.raft.CurrentTerm()))
	leader, ok := n.Leader()
	gauge(descHasLeader, bit(ok))
	if ok {
		gauge(descLeader, 1, leader)
	}
	if role == raft.Leader {
		gauge(descLastContact, 0)
	} else if last := n.raft.LastContact(); !last.IsZero() {
		gauge(descLastContact, time.Since(last).Seconds())
	}
	gauge(descApplied, float64(n.raft.AppliedIndex()))
	gauge(descCommit, float64(n.raft.CommitIndex()))
	gauge(descLastLog, float64(n.raft.LastIndex()))
	// GetConfiguration reads the latest configuration under a lock, not
	// through Raft's main loop.
	if srv, ok := findServer(n.raft.GetConfiguration().Configuration(), n.cfg.NodeID); ok {
		gauge(descVoter, bit(srv.Suffrage == raft.Voter))
	}
	// From the snapshot store, not raft.Stats: a scrape reads atomics only.
	snap, _ := n.snapshots.lastSnapshot()
	gauge(descSnapshotIndex, float64(snap.Index))
	if !snap.At.IsZero() {
		gauge(descSnapshotAge, time.Since(snap.At).Seconds())
	}
}
