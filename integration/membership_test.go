package integration_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// Membership change under load: while clients write and read LINEARIZABLE
// through the three original nodes and 200 instances beat every 500 ms
// (TTL 2.5 s), a fourth voter joins (a new process started with --join),
// then an original follower is removed, then the leader is removed
// (Cluster.Remove of its own id: it steps down once its removal commits),
// leaving the new node and one original as the cluster. No beating
// instance expires, the history is linearizable with nothing acknowledged
// lost, every node's configuration is what the changes made it, and the
// two members end with identical state.
//
// A soak run repeats it, each round on a fresh cluster (and a fresh
// history, so that porcupine checks histories of bounded size), for its
// share of the run.
func TestMembershipChangeUnderLoad(t *testing.T) {
	report := startScenario(t)
	reportRounds(t, report, reportRow{Scenario: "membership change under load"}, 1, 0.1,
		func(i int) reportRow { return membershipRound(t, i) })
}

// membershipRound is one round of TestMembershipChangeUnderLoad on a
// cluster of its own; it returns the round's row, with its failover time
// (from the leader's removal to the next acknowledged write).
func membershipRound(t *testing.T, round int) reportRow {
	const (
		instances = 200
		phase     = 2 * time.Second
	)
	// Followers wait 2-4 s without the leader before they elect another:
	// after the leader's removal every instance then goes longer than its
	// TTL without an acknowledged beat, and only the new leader's failover
	// fence keeps it.
	c := harness.Start(t, harness.Options{
		Spare:     1,
		ExtraArgs: []string{"--raft-heartbeat-timeout=2s", "--raft-election-timeout=2s"},
	})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	leader := waitLeader(t, c)
	original := c.Nodes()
	rec := harness.NewEventRecorder(t, append([]*harness.Node{leader}, c.Followers()...), t.Logf)
	b := harness.NewBeater(t, original, harness.BeaterOptions{Logf: t.Logf})
	insts, services := liveInstances(fmt.Sprintf("member%d", round), 4, instances)
	registerBeating(t, original, b, insts)
	waitCheckerSteady(t, leader)
	poll.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
	// The clients know the original nodes only, as a client configured
	// before the changes would: the removed ones refuse their calls
	// (connection refused) and they fail over to the others.
	w := startWorkload(t, original, workloadOptions{Prefix: fmt.Sprintf("member%d-lin", round)})
	passTime(t, phase)

	changes := 0
	ctx := t.Context()
	added, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changes++
	var want []string
	for _, n := range c.Nodes() {
		want = append(want, n.ID())
	}
	expectMembership(t, c, want)
	t.Logf("change %d: %s joined; members %v", changes, added, want)
	passTime(t, phase)

	// An original follower, so that the new node must count in the quorum.
	leader = waitLeader(t, c)
	var follower *harness.Node
	for _, n := range c.Followers() {
		if n != added {
			follower = n
			break
		}
	}
	if follower == nil {
		t.Fatalf("no original node among the followers %v", c.Followers())
	}
	if err := c.RemoveNode(ctx, follower); err != nil {
		t.Fatal(err)
	}
	changes++
	want = slices.DeleteFunc(want, func(id string) bool { return id == follower.ID() })
	expectMembership(t, c, want)
	t.Logf("change %d: follower %s removed (%s leads); members %v", changes, follower, leader, want)
	passTime(t, phase)

	leader = waitLeader(t, c)
	began := time.Now()
	if err := c.RemoveNode(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// The leader stepped down when its removal committed, just before
	// RemoveNode stopped it and returned: failover is measured from here
	// (a write called before may still have been acknowledged by it).
	removedAt := w.hist.Now()
	changes++
	newLeader := waitLeader(t, c)
	if newLeader == leader {
		t.Fatalf("removed leader %s still leads", leader)
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == leader.ID() })
	expectMembership(t, c, want)
	t.Logf("change %d: leader %s removed; %s leads %v after the call to remove it, members %v",
		changes, leader, newLeader, time.Since(began).Round(time.Millisecond), want)
	// Keep beating past the new leader's failover fence and one more TTL:
	// an instance it wrongly expired would be gone by then.
	waitCheckerSteady(t, newLeader)
	passTime(t, max(phase, liveTTL+liveInterval))

	checkNoFalseExpiry(t, c, b, rec, insts, services)
	final := w.finish(t, c)
	stoppedAt := time.Now()
	b.Stop()
	row := w.verdict(t, "membership change under load", final)
	syncRecorder(t, c, rec)
	row.FalseExpirations = membershipFalseExpirations(t, rec, b, services, stoppedAt)
	sameHashEverywhere(t, c)
	expectMembership(t, c, want)
	// The next round (in a soak) starts a cluster of its own.
	rec.Stop()
	if err := c.StopAll(); err != nil {
		t.Error(err)
	}

	row.Faults = changes
	row.failovers = w.hist.Recovery([]time.Duration{removedAt})
	return row
}

// membershipFalseExpirations counts the expiries no correct registry
// makes: every EXPIRED event received while the beater still beat the
// instance (none is halted: checkNoFalseExpiry has failed the test for
// them), and those check.FalseExpirations finds (earlier than the TTL after
// an acknowledged beat), which it fails the test for.
func membershipFalseExpirations(t *testing.T, rec *harness.EventRecorder, b *harness.Beater, services []string, stoppedAt time.Time) int {
	t.Helper()
	type expiry struct {
		key   harness.InstanceKey
		index uint64
	}
	falseExp := map[expiry]bool{}
	for _, e := range rec.EventsOf(registryv1.EventType_EVENT_TYPE_EXPIRED, services...) {
		if e.ReceivedAt.Before(stoppedAt) {
			falseExp[expiry{e.Key(), e.GetIndex()}] = true
		}
	}
	timing := check.FalseExpirations(rec.Events(), b.Records(), func(harness.InstanceKey) time.Duration { return liveTTL })
	for i, f := range timing {
		if i < 10 {
			t.Errorf("false expiration: %v", f)
		}
		falseExp[expiry{f.Event.Key(), f.Event.GetIndex()}] = true
	}
	return len(falseExp)
}

// expectMembership waits until every running node's configuration is
// exactly the voters want with one leader among them, and that the running
// nodes are those voters, and fails the test if that does not happen.
func expectMembership(t *testing.T, c *harness.Cluster, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var running []string
	for _, n := range c.Running() {
		running = append(running, n.ID())
	}
	slices.Sort(running)
	if !slices.Equal(running, want) {
		t.Fatalf("running nodes %v, want %v", running, want)
	}
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		for _, n := range c.Running() {
			st, err := n.Status(ctx)
			if err != nil {
				return err
			}
			var got []string
			leaders := 0
			for _, m := range st.GetMembers() {
				if !m.GetVoter() {
					return fmt.Errorf("%s: %s is not a voter", n, m.GetId())
				}
				if m.GetLeader() {
					leaders++
				}
				got = append(got, m.GetId())
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s's configuration is %v, want %v", n, got, want)
			}
			if leaders != 1 {
				return fmt.Errorf("%s's configuration %v has %d leaders", n, got, leaders)
			}
		}
		return nil
	})
}
