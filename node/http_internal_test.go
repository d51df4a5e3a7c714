package node

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/regcenter/registry/fsm"
)

func TestSDTargetGroups(t *testing.T) {
	healthy := fsm.Instance{Service: "orders", ID: "o1", Address: "10.0.0.1:80", State: fsm.StateHealthy,
		Metadata: map[string]string{"zone": "a", "app.kubernetes.io/name": "orders", "app-kubernetes-io/name": "lost"}}
	suspect := fsm.Instance{Service: "orders", ID: "o2", Address: "10.0.0.2:80", State: fsm.StateSuspect}
	other := fsm.Instance{Service: "pay", ID: "p1", Address: "10.0.0.1:80", State: fsm.StateHealthy}
	group := func(in fsm.Instance, state string, md map[string]string) targetGroup {
		labels := map[string]string{
			"__meta_registry_service":     in.Service,
			"__meta_registry_instance_id": in.ID,
			"__meta_registry_state":       state,
		}
		for k, v := range md {
			labels["__meta_registry_metadata_"+k] = v
		}
		return targetGroup{Targets: []string{in.Address}, Labels: labels}
	}
	tests := []struct {
		name           string
		in             []fsm.Instance
		includeSuspect bool
		want           []targetGroup
	}{
		{"nothing", nil, false, []targetGroup{}},
		{"healthy only by default", []fsm.Instance{healthy, suspect, other}, false, []targetGroup{
			// Both keys sanitize to the same name: the first in sorted order wins.
			group(healthy, "healthy", map[string]string{"zone": "a", "app_kubernetes_io_name": "lost"}),
			group(other, "healthy", nil),
		}},
		{"suspect on request", []fsm.Instance{suspect}, true, []targetGroup{group(suspect, "suspect", nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, sdTargetGroups(tt.in, tt.includeSuspect)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadinessLatchesTheCommitIndexOfTheFirstLeader(t *testing.T) {
	var r readiness
	steps := []struct {
		leader          bool
		commit, applied uint64
		want            bool
	}{
		{false, 0, 0, false},     // no leader yet
		{true, 0, 0, false},      // a leader, but no commit index from it yet
		{true, 50, 10, false},    // latches 50
		{true, 80, 49, false},    // still short of 50 (not of 80)
		{true, 90, 50, true},     // caught up with what was committed at start
		{true, 900, 60, true},    // stays ready while it knows a leader
		{false, 900, 900, false}, // but not without one
		{true, 900, 900, true},
	}
	for i, s := range steps {
		if got, why := r.check(s.leader, s.commit, s.applied); got != s.want {
			t.Errorf("step %d: check(%v, %d, %d) = %v (%s), want %v", i, s.leader, s.commit, s.applied, got, why, s.want)
		}
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"raft_commitTime":                    "raft_commit_time",
		"raft_net_getRPCType":                "raft_net_get_rpc_type",
		"raft_replication_appendEntries_rpc": "raft_replication_append_entries_rpc",
		"rpcType":                            "rpc_type",
		"raft_apply":                         "raft_apply",
		"raft_boltdb_txstats_pageCount":      "raft_boltdb_txstats_page_count",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRaftFamiliesGetPrometheusNamesAndSeconds(t *testing.T) {
	summary := &dto.MetricFamily{
		Name: proto.String("raft_commitTime"),
		Help: proto.String("raft_commitTime"),
		Type: dto.MetricType_SUMMARY.Enum(),
		Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{{Name: proto.String("rpcType"), Value: proto.String("AppendEntries")}},
			Summary: &dto.Summary{SampleCount: proto.Uint64(2), SampleSum: proto.Float64(30),
				Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(10)}}},
		}},
	}
	counter := &dto.MetricFamily{
		Name:   proto.String("raft_state_leader"),
		Type:   dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(3)}}},
	}
	samples := &dto.MetricFamily{
		Name:   proto.String("raft_fsm_applyBatchNum"),
		Type:   dto.MetricType_SUMMARY.Enum(),
		Metric: []*dto.Metric{{Summary: &dto.Summary{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(64)}}},
	}
	tests := []struct {
		in   *dto.MetricFamily
		want *dto.MetricFamily
	}{
		{summary, &dto.MetricFamily{
			Name: proto.String("raft_commit_time_seconds"),
			Help: proto.String("hashicorp/raft's go-metrics raft_commitTime, in seconds"),
			Type: dto.MetricType_SUMMARY.Enum(),
			Metric: []*dto.Metric{{
				Label: []*dto.LabelPair{{Name: proto.String("rpc_type"), Value: proto.String("AppendEntries")}},
				Summary: &dto.Summary{SampleCount: proto.Uint64(2), SampleSum: proto.Float64(0.03),
					Quantile: []*dto.Quantile{{Quantile: proto.Float64(0.5), Value: proto.Float64(0.01)}}},
			}},
		}},
		{counter, &dto.MetricFamily{
			Name:   proto.String("raft_state_leader_total"),
			Help:   proto.String("hashicorp/raft's go-metrics raft_state_leader"),
			Type:   dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(3)}}},
		}},
		{samples, &dto.MetricFamily{
			Name:   proto.String("raft_fsm_apply_batch_num"),
			Help:   proto.String("hashicorp/raft's go-metrics raft_fsm_applyBatchNum"),
			Type:   dto.MetricType_SUMMARY.Enum(),
			Metric: []*dto.Metric{{Summary: &dto.Summary{SampleCount: proto.Uint64(1), SampleSum: proto.Float64(64)}}},
		}},
	}
	for _, tt := range tests {
		before := proto.Clone(tt.in)
		got := normalizeRaftFamily(tt.in)
		if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("normalizeRaftFamily(%s) (-want +got):\n%s", tt.in.GetName(), diff)
		}
		if !proto.Equal(before, tt.in) {
			t.Errorf("normalizeRaftFamily(%s) changed its input", tt.in.GetName())
		}
	}
}
