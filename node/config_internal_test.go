package node

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/groupcommit"
)

func TestWithDefaultsFillsEachZeroFieldAndKeepsTheOthers(t *testing.T) {
	d := DefaultConfig()
	cfg := Config{
		Raft:    RaftTiming{HeartbeatTimeout: time.Second, TrailingLogs: 7},
		Beats:   groupcommit.Config{Window: time.Millisecond},
		Checker: beatcheck.Config{SweepInterval: 20 * time.Millisecond},
	}.withDefaults()

	wantRaft := d.Raft
	wantRaft.HeartbeatTimeout, wantRaft.TrailingLogs = time.Second, 7
	if diff := cmp.Diff(wantRaft, cfg.Raft); diff != "" {
		t.Errorf("raft timing (-want +got):\n%s", diff)
	}
	wantBeats := d.Beats
	wantBeats.Window = time.Millisecond
	if diff := cmp.Diff(wantBeats, cfg.Beats); diff != "" {
		t.Errorf("beats (-want +got):\n%s", diff)
	}
	if cfg.Checker.SweepInterval != 20*time.Millisecond || cfg.Checker.FailoverGrace != d.Checker.FailoverGrace ||
		cfg.Checker.GuardWindow != d.Checker.GuardWindow {
		t.Errorf("checker %+v: want SweepInterval 20ms and the rest from the defaults", cfg.Checker)
	}
	if cfg.MaxWatchers != d.MaxWatchers || cfg.WatchHistory != d.WatchHistory || cfg.MaxBeatRate != d.MaxBeatRate ||
		cfg.ShutdownTimeout != d.ShutdownTimeout {
		t.Errorf("watchers %d history %d beat rate %d shutdown %v: want the defaults", cfg.MaxWatchers, cfg.WatchHistory,
			cfg.MaxBeatRate, cfg.ShutdownTimeout)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = ""                  // 1
	cfg.Raft.LeaderLeaseTimeout = -1 // 2
	cfg.Checker.StallFactor = 1      // 3
	cfg.Beats.MaxPending = 1         // 4
	cfg.MaxWatchers = -1             // 5
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"node id", "leader lease", "StallFactor", "MaxPending", "max watchers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestValidateACLDefaultPolicy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.InMemory = "n1", true
	cfg = cfg.withDefaults()
	if cfg.ACLDefaultPolicy != "deny" {
		t.Errorf("default ACL default policy = %q, want deny", cfg.ACLDefaultPolicy)
	}
	for _, p := range []string{"deny", "allow"} {
		cfg.ACLDefaultPolicy = p
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate with %q: %v", p, err)
		}
	}
	cfg.ACLDefaultPolicy = "sometimes"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "acl default policy") {
		t.Errorf("Validate with sometimes = %v, want an error naming the acl default policy", err)
	}
}
