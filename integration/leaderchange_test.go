package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// liveTTLOf and liveSuspectOf give every instance of the liveness scenarios
// its TTL and suspect_after, for the timing checks.
func liveTTLOf(harness.InstanceKey) time.Duration     { return liveTTL }
func liveSuspectOf(harness.InstanceKey) time.Duration { return liveSuspect }

// checkFalseExpirations fails the test for every false expiration and
// returns their number: an instance expired earlier than its TTL after an
// acknowledged beat (check.FalseExpirations), or expired at all while its
// beater kept beating it (the beats it missed were refused or lost by the
// cluster, not skipped). It logs the false suspicions (allowed).
func checkFalseExpirations(t *testing.T, rec *harness.EventRecorder, b *harness.Beater) int {
	t.Helper()
	events, beats := rec.Events(), b.Records()
	bad := map[harness.InstanceKey]string{}
	for _, f := range check.FalseExpirations(events, beats, liveTTLOf) {
		bad[f.Event.Key()] = f.String()
	}
	for _, e := range rec.EventsOf(typeExpired) {
		if r, ok := beats[e.Key()]; ok && !r.Halted && bad[e.Key()] == "" {
			bad[e.Key()] = fmt.Sprintf("%s expired at index %d while its beater kept beating it (last acknowledged beat %v before the event)",
				e.Key(), e.GetIndex(), e.ReceivedAt.Sub(r.LastAck).Round(time.Millisecond))
		}
	}
	n := 0
	for _, msg := range bad {
		if n < 10 {
			t.Errorf("false expiration: %s", msg)
		}
		n++
	}
	if n := len(check.FalseSuspicions(events, beats, liveSuspectOf)); n > 0 {
		t.Logf("%d false suspicions (allowed, ideally none)", n)
	}
	return n
}

// The leader is taken away in every way a leader goes, over and over, while
// 500 instances beat every 500 ms (TTL 2.5 s) and a client writes and
// reads LINEARIZABLE: SIGKILL (then restart), SIGSTOP for 0.5-5 s (then
// SIGCONT), cut off from both peers for 1-3 s (then healed), and a
// leadership transfer. No instance expires, no beat is refused, the history
// is linearizable and nothing acknowledged is lost.
func TestLeaderChangesWhile500InstancesBeatExpireNothing(t *testing.T) {
	report := startScenario(t)
	n := 500
	if testing.Short() {
		n = 100
	}
	// hashicorp/raft's default timing (1 s, five times the node's): the
	// elections take 1-2 s, so the beats missed while there is no leader
	// add up to more than the TTL and only the new leader's failover fence
	// keeps the instances. With the node's faster default a leader change
	// rarely costs an instance its TTL, and the fence would go untested.
	f := startFleet(t, harness.Options{FaultInjection: true, ExtraArgs: []string{
		"--raft-heartbeat-timeout=1s", "--raft-election-timeout=1s", "--raft-leader-lease-timeout=500ms",
	}}, "changes", 5, n, false)
	c, rec, b, instances, services := f.c, f.rec, f.b, f.instances, f.services
	w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: "changes-lin", Clients: 2, Pace: 50 * time.Millisecond})

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	kinds := []string{"kill", "pause", "isolate", "transfer"}
	var (
		faultAt []time.Duration
		done    = map[string]int{}
	)
	t.Logf("fault seed %d", seed)
	rounds(t, 1, 0.2, func(int) {
		for _, k := range rng.Perm(len(kinds)) {
			kind := kinds[k]
			old := waitLeader(t, c)
			faultAt = append(faultAt, w.hist.Now())
			at := time.Now()
			detail := takeLeaderAway(t, c, old, kind, rng)
			done[kind]++
			now := waitLeader(t, c)
			// Every instance beaten again before the next fault.
			waitBeaten(t, c, rec, b)
			t.Logf("%s %s%s: %s leads; every instance beaten again %v after the fault",
				kind, old, detail, now, time.Since(at).Round(time.Millisecond))
		}
	})
	// Keep beating past the last leader's fence and one more TTL: an
	// instance it wrongly expired would be gone by then.
	waitCheckerSteady(t, c.Leader())
	passTime(t, liveTTL)
	final := w.finish(t, c)
	row := w.verdict(t, "leader changes, 500 beating", final)
	b.Stop()
	checkNoFalseExpiry(t, c, b, rec, instances, services)
	row.FalseExpirations = checkFalseExpirations(t, rec, b)
	row.Ops += n
	row.Faults = len(faultAt)
	row.Failover = check.Percentiles(w.hist.Recovery(faultAt))
	t.Logf("faults: %v", done)
	report(row)
}

// takeLeaderAway takes leader away by kind and brings it back as a follower
// (restarted, resumed, healed); it returns a detail for the log.
func takeLeaderAway(t *testing.T, c *harness.Cluster, leader *harness.Node, kind string, rng *rand.Rand) string {
	t.Helper()
	var others []*harness.Node
	for _, n := range c.Nodes() {
		if n != leader {
			others = append(others, n)
		}
	}
	switch kind {
	case "kill":
		if err := leader.Kill(); err != nil {
			t.Fatal(err)
		}
		waitLeaderAmong(t, c, others)
		if err := leader.Restart(); err != nil {
			t.Fatal(err)
		}
		return ""
	case "pause":
		d := 500*time.Millisecond + rand.N(4500*time.Millisecond)
		if err := leader.Pause(); err != nil {
			t.Fatal(err)
		}
		passTime(t, d)
		if err := leader.Resume(); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(" for %v", d.Round(time.Millisecond))
	case "isolate":
		d := time.Second + rand.N(2*time.Second)
		if err := c.Isolate(t.Context(), leader); err != nil {
			t.Fatal(err)
		}
		waitLeaderAmong(t, c, others)
		passTime(t, d)
		if err := c.Heal(t.Context()); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(" for %v", d.Round(time.Millisecond))
	case "transfer":
		to := others[rng.IntN(len(others))]
		ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
		defer cancel()
		if err := c.TransferLeadership(ctx, to); err != nil {
			t.Fatal(err)
		}
		return " to " + to.ID()
	}
	t.Fatalf("unknown fault %q", kind)
	return ""
}

// waitBeaten waits until every instance has a beat acknowledged after now.
// If that does not happen, it reports the false expirations (the usual
// cause: an instance that was removed has its beats refused) and stops the
// test.
func waitBeaten(t *testing.T, c *harness.Cluster, rec *harness.EventRecorder, b *harness.Beater) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), replicationTimeout)
	defer cancel()
	if err := poll.Until(ctx, b.AckedSince(time.Now())); err != nil {
		syncRecorder(t, c, rec)
		checkFalseExpirations(t, rec, b)
		t.Fatalf("instances not beaten again: %v", err)
	}
}

func waitLeaderAmong(t *testing.T, c *harness.Cluster, nodes []*harness.Node) *harness.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
	defer cancel()
	l, err := c.WaitLeaderAmong(ctx, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A leader frozen (SIGSTOP) for longer than the TTL, then resumed, proposes
// no expiry of an instance that kept beating: alone (the others elect a new
// leader; its proposals cannot commit and its checker must not act on its
// stale view before it learns that), and with the whole cluster frozen (no
// new leader: it resumes as the leader, with every last beat older than the
// TTL on its clock; the stall fence must hold). 100 instances beat every
// 500 ms with a TTL of 2.5 s; no instance expires.
func TestAStalledLeaderExpiresNothingWhenItResumes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		whole bool
	}{{"leader alone", false}, {"whole cluster", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			report := startScenario(t)
			f := startFleet(t, harness.Options{}, "stall", 4, 100, false)
			c, rec, b, instances, services := f.c, f.rec, f.b, f.instances, f.services
			w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: "stall-lin", Clients: 1, Pace: 50 * time.Millisecond})

			var faultAt []time.Duration
			rounds(t, 1, 0.025, func(int) {
				old := waitLeader(t, c)
				st, err := old.Status(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				frozen := []*harness.Node{old}
				if tc.whole {
					frozen = c.Nodes()
				}
				// Past the TTL and the failover grace: on the frozen
				// leader's clock every last beat is older than the TTL.
				stall := liveTTL + failoverGrace + time.Second
				faultAt = append(faultAt, w.hist.Now())
				for _, n := range frozen {
					if err := n.Pause(); err != nil {
						t.Fatal(err)
					}
				}
				passTime(t, stall)
				// The old leader resumes last, when the rest are running.
				for i := len(frozen) - 1; i >= 0; i-- {
					if err := frozen[i].Resume(); err != nil {
						t.Fatal(err)
					}
				}
				// Once every node runs, leadership may move again: follow
				// it to a leader whose checker is past its fence.
				now, term := waitSteadyLeader(t, c)
				t.Logf("froze %d node(s) with leader %s (term %d) for %v; %s leads in term %d",
					len(frozen), old, st.GetTerm(), stall, now, term)
				waitBeaten(t, c, rec, b)
			})
			passTime(t, liveTTL)
			final := w.finish(t, c)
			row := w.verdict(t, "stalled leader ("+tc.name+")", final)
			b.Stop()
			checkNoFalseExpiry(t, c, b, rec, instances, services)
			row.FalseExpirations = checkFalseExpirations(t, rec, b)
			row.Ops += len(instances)
			row.Faults = len(faultAt)
			row.Failover = check.Percentiles(w.hist.Recovery(faultAt))
			report(row)
		})
	}
}
