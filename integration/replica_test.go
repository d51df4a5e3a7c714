package integration_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// A read replica (registry-node --read-replica) in a three-voter cluster,
// through its life: it serves STALE and DEFAULT reads, a watch and
// Prometheus service discovery from its own copy; killed, it leaves writes
// and beats through the voters unaffected, and catches up when restarted;
// cut off until the leader's log is compacted past it, it catches up by
// installing a snapshot once healed; registryctl lists it as a replica
// with its lag, promotes it to a voter and demotes it back.
func TestAReadReplicaServesReadsSurvivesFaultsAndChangesRole(t *testing.T) {
	t.Parallel()
	ctl := buildRegistryctl(t)
	c := harness.Start(t, harness.Options{FaultInjection: true, Spare: 1, ExtraArgs: snapshotCatchupArgs})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := c.AddReplica(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	voters := c.Voters()
	ctx := t.Context()

	t.Run("serves reads, a watch and service discovery", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watch, err := r.RegistryClient().Watch(wctx, &registryv1.WatchRequest{Service: "replicated"})
		if err != nil {
			t.Fatal(err)
		}
		in := newInstance("replicated", "r1", 1)
		if _, err := register(t, voters[0], in); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(replicationTimeout)
		for seen := false; !seen; {
			msg, err := watch.Recv()
			if err != nil {
				t.Fatalf("watch on %s: %v", r, err)
			}
			for _, ev := range msg.GetEvents() {
				seen = seen || ev.GetInstance().GetId() == "r1" && ev.GetType() == registryv1.EventType_EVENT_TYPE_REGISTERED
			}
			for _, i := range msg.GetInstances() {
				seen = seen || i.GetId() == "r1"
			}
			if !seen && time.Now().After(deadline) {
				t.Fatalf("the watch on %s did not show r1 within %v", r, replicationTimeout)
			}
		}
		waitForCount(t, r, "replicated", 1)
		resp, err := getService(ctx, r, "replicated", registryv1.Consistency_CONSISTENCY_DEFAULT)
		if err != nil || len(resp.GetInstances()) != 1 || !resp.GetKnownLeader() {
			t.Errorf("DEFAULT read through %s: %v, %v; want r1 and a known leader", r, resp, err)
		}
		poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
			body, err := httpGet(ctx, "http://"+r.HTTPAddr()+"/v1/sd/prometheus?service=replicated")
			if err != nil {
				return err
			}
			if !strings.Contains(body, in.GetAddress()) {
				return fmt.Errorf("%s's service discovery does not list %s: %s", r, in.GetAddress(), body)
			}
			return nil
		})
	})

	t.Run("killed, it leaves writes and beats unaffected", func(t *testing.T) {
		b := harness.NewBeater(t, voters, harness.BeaterOptions{Logf: t.Logf})
		defer b.Stop()
		beating, _ := liveInstances("replicakill", 2, 20)
		registerBeating(t, voters, b, beating)
		if err := r.Kill(); err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		fill := make([]*registryv1.Instance, 20)
		for i := range fill {
			fill[i] = newInstance("whilereplicadown", fmt.Sprintf("w%02d", i), i)
		}
		acked := registerAll(t, voters, 4, fill) // fails the test unless each is acknowledged
		poll.Eventually(t, replicationTimeout, b.AckedSince(killedAt))
		for k, rec := range b.Records() {
			if rec.Rejections > 0 {
				t.Errorf("%s: %d beats rejected (last %v) with the replica down", k, rec.Rejections, rec.LastRejection)
			}
		}
		if err := r.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		got := waitForCount(t, r, "whilereplicadown", len(fill))
		if diff := cmp.Diff(acked, recordsOf(got)); diff != "" {
			t.Errorf("restarted %s holds other instances than were registered while it was down (-registered +replica):\n%s", r, diff)
		}
	})

	t.Run("cut off past the log's compaction, it catches up by snapshot", func(t *testing.T) {
		leader := waitLeader(t, c)
		installsBefore := metricOrZero(t, r, installSnapshotCount)
		if err := c.Isolate(ctx, r); err != nil {
			t.Fatal(err)
		}
		st, err := r.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cutLast := st.GetLastLogIndex()
		fill := make([]*registryv1.Instance, snapshotFill)
		for i := range fill {
			fill[i] = newInstance("whilereplicacut", fmt.Sprintf("c%03d", i), i)
		}
		// One at a time: concurrent registrations share Raft entries (the
		// write group commit), and the fill must add an entry each to pass
		// --snapshot-threshold.
		acked := registerAll(t, voters, 1, fill)
		need := cutLast + 1 + snapshotTrailingLogs
		poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
			v, err := scrapeMetric(ctx, leader, "registry_raft_last_snapshot_index")
			if err != nil {
				return err
			}
			if uint64(v) < need {
				return fmt.Errorf("%s's last snapshot is at index %v, want %d or later (past %s's log, which ends at %d)", leader, v, need, r, cutLast)
			}
			return nil
		})
		if err := c.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		lst, err := leader.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, convergeTimeout, func(ctx context.Context) error {
			rst, err := r.Status(ctx)
			if err != nil {
				return err
			}
			if rst.GetAppliedIndex() < lst.GetCommitIndex() {
				return fmt.Errorf("%s has applied %d, the leader had committed %d at the heal", r, rst.GetAppliedIndex(), lst.GetCommitIndex())
			}
			return nil
		})
		got := waitForCount(t, r, "whilereplicacut", len(fill))
		if diff := cmp.Diff(acked, recordsOf(got)); diff != "" {
			t.Errorf("%s holds other instances than were registered while it was cut off (-registered +replica):\n%s", r, diff)
		}
		if installs := metricOrZero(t, r, installSnapshotCount); installs <= installsBefore {
			t.Errorf("%s caught up without installing a snapshot: InstallSnapshot RPCs %v, %v before the cut", r, installs, installsBefore)
		}
		if installed := uint64(metricOrZero(t, r, "registry_raft_last_snapshot_index")); installed <= cutLast {
			t.Errorf("%s's last snapshot index is %d, not past its last log index %d before the cut", r, installed, cutLast)
		}
	})

	t.Run("registryctl lists, promotes and demotes it", func(t *testing.T) {
		poll.Eventually(t, replicationTimeout, func(context.Context) error {
			out := registryctl(t, ctl, c, "cluster", "members")
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) == 7 && f[0] == r.ID() {
					if f[4] != "replica" || f[6] == "-" {
						return fmt.Errorf("%s is listed as %q, want the role replica and a lag", r, line)
					}
					return nil
				}
			}
			return fmt.Errorf("%s is not listed:\n%s", r, out)
		})
		if v := metricOrZero(t, r, "registry_raft_voter"); v != 0 {
			t.Errorf("%s's registry_raft_voter is %v as a replica, want 0", r, v)
		}
		registryctl(t, ctl, c, "cluster", "promote", r.ID())
		if err := c.WaitRole(ctx, r, "voter"); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
			if v, err := scrapeMetric(ctx, r, "registry_raft_voter"); err != nil || v != 1 {
				return fmt.Errorf("%s's registry_raft_voter is %v (%v) as a voter, want 1", r, v, err)
			}
			return nil
		})
		registryctl(t, ctl, c, "cluster", "demote", r.ID())
		if err := c.WaitRole(ctx, r, "replica"); err != nil {
			t.Fatal(err)
		}
	})
	sameHashEverywhere(t, c)
}

// The mixed-faults scenario (TestMixedFaultsUnderLoadStayLinearizable)
// with a read replica as a fourth node: the clients use it like any node
// and the faults hit it like any node.
func TestMixedFaultsWithAReadReplicaStayLinearizable(t *testing.T) {
	t.Parallel()
	report := startScenario(t)
	c := harness.Start(t, harness.Options{FaultInjection: true, Spare: 1})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddReplica(t.Context()); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("fault seed %d", seed)
	reportRounds(t, report, reportRow{Scenario: "mixed faults, with a read replica", FalseExpirations: notApplicable}, 1, 0.05,
		func(i int) reportRow { return mixedFaults(t, c, rng, i) })
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}
