package integration_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// Snapshot settings small enough that a follower cut off for a second or
// two falls behind the leader's log: a snapshot once 64 entries have been
// appended since the last one (checked every 200-400 ms), keeping 16
// entries after it.
var snapshotCatchupArgs = []string{
	"--snapshot-interval=200ms",
	"--snapshot-threshold=64",
	"--trailing-logs=" + strconv.Itoa(snapshotTrailingLogs),
}

// A follower cut off (Raft links only) while clients write and read
// LINEARIZABLE through every node, until the leader has taken a snapshot
// past the follower's last log index and compacted its log past it: once
// healed, the leader can only send it a snapshot. The follower installs one
// (its raft metrics say so) and catches up; it holds exactly the instances
// registered while it was cut off, every node then holds the same state
// hash at the same applied index, the history is linearizable and nothing
// acknowledged is lost.
//
// A soak run repeats it, cutting off the followers in turn, for its share
// of the run.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	t.Parallel()
	report := startScenario(t)
	c := harness.Start(t, harness.Options{FaultInjection: true, ExtraArgs: snapshotCatchupArgs})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	reportRounds(t, report, reportRow{Scenario: "follower catches up by snapshot", FalseExpirations: notApplicable}, 1, 0.05,
		func(i int) reportRow { return snapshotCatchupRound(t, c, i) })
}

// snapshotCatchupRound is one round of TestFollowerCatchesUpBySnapshot,
// with a fresh workload.
func snapshotCatchupRound(t *testing.T, c *harness.Cluster, round int) reportRow {
	const phase = 2 * time.Second
	leader := waitLeader(t, c)
	followers := c.Followers()
	cut := followers[round%len(followers)]
	var majority []*harness.Node
	for _, n := range c.Nodes() {
		if n != cut {
			majority = append(majority, n)
		}
	}
	installsBefore := metricOrZero(t, cut, installSnapshotCount)
	restoresBefore := metricOrZero(t, cut, fsmRestoreCount)

	w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: fmt.Sprintf("snap%d", round)})
	passTime(t, phase/2)

	if err := c.Isolate(t.Context(), cut); err != nil {
		t.Fatal(err)
	}
	// The cut-off node appends nothing from now on.
	st, err := cut.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cutLast := st.GetLastLogIndex()
	t.Logf("round %d: %s cut off at last log index %d; %s leads", round, cut, cutLast, leader)
	// Instances registered now and never written again: they can reach cut
	// only in the snapshot it installs.
	fillService := fmt.Sprintf("snapfill%d", round)
	fill := make([]*registryv1.Instance, snapshotFill)
	for i := range fill {
		fill[i] = newInstance(fillService, fmt.Sprintf("f%03d", i), i)
	}
	// One at a time: concurrent registrations share Raft entries (the
	// write group commit), and the fill must add an entry each to pass
	// --snapshot-threshold.
	acked := registerAll(t, majority, 1, fill)

	// The leader must drop cutLast+1, the next entry cut needs, from its
	// log. hashicorp/raft compacts its log right after each snapshot up to
	// min(snapshot index, last index - trailing logs), so a snapshot at an
	// index of at least cutLast + 1 + trailing logs does.
	need := cutLast + 1 + snapshotTrailingLogs
	var snapIndex uint64
	poll.Eventually(t, replicationTimeout+phase, func(ctx context.Context) error {
		l, err := c.WaitLeaderAmong(ctx, majority...)
		if err != nil {
			return err
		}
		if l != leader {
			return fmt.Errorf("%s leads, not %s: the scenario wants one leader", l, leader)
		}
		v, err := scrapeMetric(ctx, leader, "registry_raft_last_snapshot_index")
		if err != nil {
			return err
		}
		if snapIndex = uint64(v); snapIndex < need {
			return fmt.Errorf("%s's last snapshot is at index %d; %s's log ends at %d: want a snapshot at %d or later",
				leader, snapIndex, cut, cutLast, need)
		}
		return nil
	})
	t.Logf("round %d: %s took a snapshot at index %d, so its log no longer holds index %d or below, nor %s's last index %d",
		round, leader, snapIndex, snapIndex-snapshotTrailingLogs, cut, cutLast)
	passTime(t, phase/2)

	if err := c.Heal(t.Context()); err != nil {
		t.Fatal(err)
	}
	healedAt := time.Now()
	lst, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// hashicorp/raft backs off its replication to a follower that failed
	// for a while, up to seconds (see convergeTimeout).
	poll.Eventually(t, convergeTimeout, func(ctx context.Context) error {
		fst, err := cut.Status(ctx)
		if err != nil {
			return err
		}
		if fst.GetAppliedIndex() < lst.GetCommitIndex() {
			return fmt.Errorf("%s has applied %d, the leader had committed %d at the heal", cut, fst.GetAppliedIndex(), lst.GetCommitIndex())
		}
		return nil
	})
	resp, err := getService(t.Context(), cut, fillService, registryv1.Consistency_CONSISTENCY_STALE)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acked, recordsOf(resp.GetInstances())); diff != "" {
		t.Errorf("%s, caught up to index %d, holds other instances of %s than were registered while it was cut off (-registered +%s):\n%s",
			cut, resp.GetIndex(), fillService, cut, diff)
	}
	installs, restores := metricOrZero(t, cut, installSnapshotCount), metricOrZero(t, cut, fsmRestoreCount)
	if installs <= installsBefore || restores <= restoresBefore {
		t.Errorf("%s caught up without installing a snapshot: InstallSnapshot RPCs %v (%v before the cut), fsm restores %v (%v before)",
			cut, installs, installsBefore, restores, restoresBefore)
	}
	installed := uint64(metricOrZero(t, cut, "registry_raft_last_snapshot_index"))
	if installed <= cutLast {
		t.Errorf("%s's last snapshot index is %d after catching up, not past its last log index %d before", cut, installed, cutLast)
	}
	t.Logf("round %d: %s caught up %v after the heal: InstallSnapshot RPCs %v → %v, fsm restores %v → %v, last snapshot index %d",
		round, cut, time.Since(healedAt).Round(time.Millisecond), installsBefore, installs, restoresBefore, restores, installed)
	passTime(t, phase/2)

	final := w.finish(t, c)
	sameHashEverywhere(t, c)
	row := w.verdict(t, "follower catches up by snapshot", final)
	row.Faults = 1
	return row
}

// snapshotTrailingLogs is --trailing-logs in snapshotCatchupArgs.
const snapshotTrailingLogs = 16

// snapshotFill is how many instances a round registers while the follower
// is cut off.
const snapshotFill = 50

// hashicorp/raft's metrics, on the follower: InstallSnapshot RPCs handled
// and restores of the state machine from a snapshot (which, with no
// restart, only an installed snapshot makes).
const (
	installSnapshotCount = "raft_rpc_install_snapshot_seconds_count"
	fsmRestoreCount      = "raft_fsm_restore_seconds_count"
)

// metricOrZero is scrapeMetric, with 0 for a sample not there yet (raft's
// metrics appear at their first observation).
func metricOrZero(t *testing.T, n *harness.Node, name string) float64 {
	t.Helper()
	v, err := scrapeMetric(t.Context(), n, name)
	if errors.Is(err, errNoSample) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// scrapeMetric reads one unlabelled sample from n's /metrics.
func scrapeMetric(ctx context.Context, n *harness.Node, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: metrics: %w", n, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: metrics: %s", n, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: metrics: %w", n, err)
	}
	return 0, fmt.Errorf("%s: metrics: %w: %s", n, errNoSample, name)
}

var errNoSample = errors.New("no such sample")
