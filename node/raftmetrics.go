package node

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gometricsprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// hashicorp/raft and raft-boltdb report their own metrics through the
// process-wide go-metrics instance (github.com/hashicorp/go-metrics/compat:
// armon/go-metrics unless built with -tags hashicorpmetrics, as raft is).
// Its Prometheus sink bridges them; raftMetrics serves what the sink
// collects with Prometheus names: snake_case, counters ending in _total,
// timers (go-metrics measures them in milliseconds) in seconds with a
// _seconds suffix.
//
// The go-metrics instance is global, so every node of one process (in-process
// test clusters) shares these metrics.
var raftSink struct {
	once     sync.Once
	gatherer prometheus.Gatherer
	err      error
}

// raftMetrics installs the go-metrics Prometheus sink, once per process,
// and returns a Gatherer of its metrics under Prometheus names.
func raftMetrics() (prometheus.Gatherer, error) {
	raftSink.once.Do(func() {
		reg := prometheus.NewRegistry()
		sink, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{
			Registerer: reg,
			Name:       "raft_go_metrics_sink",
			Expiration: 0, // keep every metric: the set is small and fixed
		})
		if err != nil {
			raftSink.err = fmt.Errorf("raft metrics: %w", err)
			return
		}
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname = false       // not in the metric names
		cfg.EnableRuntimeMetrics = false // the Go collector has them
		if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
			raftSink.err = fmt.Errorf("raft metrics: %w", err)
			return
		}
		raftSink.gatherer = raftGatherer{reg}
	})
	return raftSink.gatherer, raftSink.err
}

// unit is what a go-metrics value measures.
type unit uint8

const (
	unitNone unit = iota
	unitMillis
	unitBytes
	unitRatio
)

// raftUnits names the go-metrics keys (flattened with "_") whose unit is
// not the default: samples (summaries) are timers in milliseconds unless
// listed; gauges and counters have no unit unless listed.
var raftUnits = map[string]unit{
	"raft_fsm_applyBatchNum":       unitNone,
	"raft_thread_main_saturation":  unitRatio,
	"raft_thread_fsm_saturation":   unitRatio,
	"raft_boltdb_logSize":          unitBytes,
	"raft_boltdb_logBatchSize":     unitBytes,
	"raft_boltdb_logsPerBatch":     unitNone,
	"raft_boltdb_writeCapacity":    unitNone,
	"raft_fsm_lastRestoreDuration": unitMillis,
}

func unitOf(key string, t dto.MetricType) unit {
	if u, ok := raftUnits[key]; ok {
		return u
	}
	switch {
	case t == dto.MetricType_SUMMARY, strings.HasSuffix(key, "_oldestLogAge"):
		return unitMillis
	}
	return unitNone
}

// raftGatherer renames the families the go-metrics sink collects.
type raftGatherer struct{ g prometheus.Gatherer }

func (r raftGatherer) Gather() ([]*dto.MetricFamily, error) {
	families, err := r.g.Gather()
	out := make([]*dto.MetricFamily, 0, len(families))
	seen := make(map[string]bool, len(families))
	for _, mf := range families {
		mf = normalizeRaftFamily(mf)
		if seen[mf.GetName()] {
			continue // two go-metrics keys that only differ in case
		}
		seen[mf.GetName()] = true
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, err
}

// normalizeRaftFamily returns a copy of mf with a Prometheus name, help,
// label names and, for millisecond values, values in seconds.
func normalizeRaftFamily(mf *dto.MetricFamily) *dto.MetricFamily {
	mf = proto.Clone(mf).(*dto.MetricFamily)
	key, t := mf.GetName(), mf.GetType()
	name, u := snakeCase(key), unitOf(key, t)
	divisor := 1.0
	switch u {
	case unitMillis:
		name, divisor = name+"_seconds", 1000
	case unitBytes:
		name += "_bytes"
	case unitRatio:
		name += "_ratio"
	}
	if t == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
		name += "_total"
	}
	help := "hashicorp/raft's go-metrics " + key
	if u == unitMillis {
		help += ", in seconds"
	}
	mf.Name, mf.Help = &name, &help
	for _, m := range mf.Metric {
		for _, l := range m.Label {
			l.Name = proto.String(snakeCase(l.GetName()))
		}
		if divisor == 1 {
			continue
		}
		if g := m.GetGauge(); g != nil {
			g.Value = proto.Float64(g.GetValue() / divisor)
		}
		if s := m.GetSummary(); s != nil {
			s.SampleSum = proto.Float64(s.GetSampleSum() / divisor)
			for _, q := range s.Quantile {
				q.Value = proto.Float64(q.GetValue() / divisor)
			}
		}
	}
	return mf
}

// snakeCase turns the camelCase parts of a go-metrics name into snake_case:
// "raft_commitTime" becomes "raft_commit_time", "getRPCType" "get_rpc_type".
func snakeCase(s string) string {
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && rs[i-1] != '_' {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
