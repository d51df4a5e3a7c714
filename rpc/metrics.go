package rpc

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcenter/registry/fsm"
)

// Metrics are the services' Prometheus metrics: beats, watches and
// forwarding, counted by this node. Nothing here carries a service label.
type Metrics struct {
	beatsReceived     prometheus.Counter
	beatsApplied      prometheus.Counter
	beatsRejected     *prometheus.CounterVec
	beatBatchSize     prometheus.Histogram
	writeBatchSize    prometheus.Histogram
	beatCommitLatency prometheus.Histogram
	watchers          prometheus.Gauge
	watchEvents       prometheus.Counter
	watchResets       prometheus.Counter
	forwarded         *prometheus.CounterVec
	rateLimited       prometheus.Counter
}

// NewMetrics returns the metrics, registered with reg unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		beatsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_beats_received_total",
			Help: "Beats (one per instance named) received from clients by this node, in Beat calls and BeatStream frames; beats forwarded by other nodes are not counted again.",
		}),
		beatsApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_beats_applied_total",
			Help: "Beats committed and applied in the BeatBatch entries this node proposed as leader.",
		}),
		beatsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_beats_rejected_total",
			Help: "Beats in the BeatBatch entries this node proposed as leader that were not applied, by reason: unknown (not registered) or fenced (another incarnation).",
		}, []string{"reason"}),
		beatBatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "registry_beat_batch_size_beats",
			Help:    "Beats carried by each BeatBatch entry this node proposed as leader (the group commit's batch size).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000},
		}),
		writeBatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "registry_write_batch_size_writes",
			Help:    "Registrations and deregistrations carried by each entry this node proposed for them as leader (the write group commit's batch size).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000},
		}),
		beatCommitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "registry_beat_commit_latency_seconds",
			Help:    "Time from a beat's arrival on this node to its acknowledgement: group commit, forwarding to the leader and the Raft commit.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "registry_watchers",
			Help: "Watch streams this node serves now.",
		}),
		watchEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_watch_events_sent_total",
			Help: "Events sent on the watch streams of this node.",
		}),
		watchResets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_watch_resets_total",
			Help: "Resets (the whole current set) sent on the watch streams of this node: one at each start, and one whenever a watcher fell behind the kept history.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_forwarded_requests_total",
			Help: "Calls this node forwarded to the leader, by gRPC method; forwarded beat batches count one each.",
		}, []string{"method"}),
	}
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "registry_writes_rate_limited_total",
		Help: "Writes (Register, Deregister, Beat calls and BeatStream frames) this node refused with RESOURCE_EXHAUSTED because their client address exceeded --write-rate.",
	})
	for _, reason := range []fsm.RejectReason{fsm.RejectUnknown, fsm.RejectFenced} {
		m.beatsRejected.WithLabelValues(rejectLabel(reason))
	}
	if reg != nil {
		reg.MustRegister(m.beatsReceived, m.beatsApplied, m.beatsRejected, m.beatBatchSize, m.writeBatchSize, m.beatCommitLatency,
			m.watchers, m.watchEvents, m.watchResets, m.forwarded, m.rateLimited)
	}
	return m
}

// rejectLabel is the reason label of a beat rejection: "unknown" or "fenced".
func rejectLabel(r fsm.RejectReason) string { return strings.ToLower(r.String()) }
