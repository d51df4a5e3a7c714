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

func TestLimitsValidateNamesEachProblemAndDefaultsFill(t *testing.T) {
	l := Limits{MaxConnections: 1, GRPCMaxConcurrentStreams: 1, HTTPMaxHeaderBytes: 10, HTTPReadTimeout: -1,
		WriteRate: -1, WriteBurst: 1, MaxWatchesPerClient: 1}.WithDefaults()
	err := l.Validate()
	for _, want := range []string{"max connections", "http max header bytes", "http read timeout", "write rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %s", err, want)
		}
	}
	d := DefaultLimits()
	if got := (Limits{}).WithDefaults(); !cmp.Equal(got, d) {
		t.Errorf("zero Limits with defaults:\n%s", cmp.Diff(d, got))
	}
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultLimits do not validate: %v", err)
	}
}

func TestTheAllowListAcceptsIPsAndOwnNamesOnly(t *testing.T) {
	n := &Node{cfg: Config{HTTPAddr: "127.0.0.1:7201", HTTPAdvertise: "node1.example:7201"}}
	a := n.httpAllowList()
	for host, want := range map[string]bool{
		"127.0.0.1:7201": true, "10.1.2.3": true, "[::1]:7201": true, "localhost:7201": true,
		"node1.example:7201": true, "NODE1.example.": true, "evil.example:7201": false, "localhost.evil.example": false,
	} {
		if got := a.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	for _, o := range []string{"http://node1.example:7201", "https://localhost:7201", "http://127.0.0.1:7201", "http://[::1]:7201"} {
		if !a.origins[o] {
			t.Errorf("origin %q not allowed by default", o)
		}
	}
	if a.origins["http://node1.example"] || a.origins["null"] {
		t.Errorf("an origin on another port, or null, is allowed")
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

func TestValidateWantsTheWatchHistoryToHoldOneSweep(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "watch history") {
		t.Fatalf("the default watch history is refused: %v", err)
	}
	cfg.WatchHistory = cfg.Checker.MaxSuspectsPerSweep + cfg.Checker.MaxExpiriesPerSweep - 1
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "watch history") || !strings.Contains(err.Error(), "expiry sweep") {
		t.Errorf("watch history %d below one sweep: error %v, want one naming the watch history and the sweep", cfg.WatchHistory, err)
	}
}
