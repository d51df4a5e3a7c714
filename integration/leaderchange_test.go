package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
)

// liveTTLOf and liveSuspectOf give every instance of the liveness scenarios
// its TTL and suspect_after, for the timing checks.
func liveTTLOf(harness.InstanceKey) time.Duration     { return liveTTL }
func liveSuspectOf(harness.InstanceKey) time.Duration { return liveSuspect }

// checkFalseExpirations fails the test for every expiry earlier than the
// TTL after an acknowledged beat, logs the false suspicions (allowed), and
// returns the number of false expirations.
func checkFalseExpirations(t *testing.T, rec *harness.EventRecorder, b *harness.Beater) int {
	t.Helper()
	events, beats := rec.Events(), b.Records()
	falseExp := check.FalseExpirations(events, beats, liveTTLOf)
	for i, f := range falseExp {
		if i == 10 {
			break
		}
		t.Errorf("false expiration: %v", f)
	}
	if n := len(check.FalseSuspicions(events, beats, liveSuspectOf)); n > 0 {
		t.Logf("%d false suspicions (allowed, ideally none)", n)
	}
	return len(falseExp)
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
	c := harness.Start(t, harness.Options{FaultInjection: true})
	leader := waitLeader(t, c)
	rec := harness.NewEventRecorder(t, append(c.Followers(), leader), t.Logf)
	b := harness.NewBeater(t, c.Nodes(), harness.BeaterOptions{Logf: t.Logf})
	instances, services := liveInstances("changes", 5, n)
	registerBeating(t, c.Nodes(), b, instances)
	waitCheckerSteady(t, leader)
	harness.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
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
			harness.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
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
			c := harness.Start(t, harness.Options{})
			leader := waitLeader(t, c)
			rec := harness.NewEventRecorder(t, append(c.Followers(), leader), t.Logf)
			b := harness.NewBeater(t, c.Nodes(), harness.BeaterOptions{Logf: t.Logf})
			instances, services := liveInstances("stall", 4, 100)
			registerBeating(t, c.Nodes(), b, instances)
			waitCheckerSteady(t, leader)
			harness.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
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
				now := waitLeader(t, c)
				after, err := now.Status(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("froze %d node(s) with leader %s (term %d) for %v; %s leads in term %d",
					len(frozen), old, st.GetTerm(), stall, now, after.GetTerm())
				harness.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
				waitCheckerSteady(t, now)
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
