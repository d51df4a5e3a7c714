package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// A node whose clock is 10 minutes ahead of (or behind) the others leads
// for a while and hands leadership back, while 200 instances beat: no
// beating instance expires, the instances that stop beating while it leads
// are removed within the bound across a leader change, and every node ends
// with the same state at the same applied index.
func TestClockOffsetLeaderExpiresNoBeatingInstance(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
	}{
		{"ahead", 10 * time.Minute},
		{"behind", -10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testClockOffsetLeader(t, tc.offset)
		})
	}
}

func testClockOffsetLeader(t *testing.T, offset time.Duration) {
	report := startScenario(t)
	const (
		total = 200
		dying = 10 // 5 %, below the mass-expiry guard
	)
	c := harness.Start(t, harness.Options{ClockOffsets: map[string]time.Duration{"n3": offset}})
	skewed := c.Node("n3")
	leader := waitLeader(t, c)
	if leader == skewed {
		ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
		err := c.TransferLeadership(ctx, c.Node("n1"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		leader = c.Node("n1")
	}
	rec := harness.NewEventRecorder(t, append([]*harness.Node{leader}, c.Followers()...), t.Logf)
	b := harness.NewBeater(t, c.Nodes(), harness.BeaterOptions{Logf: t.Logf})
	instances, services := liveInstances("skew", 4, total)
	registerBeating(t, c.Nodes(), b, instances)
	poll.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
	keys := keysOf(instances)
	var dead []harness.InstanceKey
	for i, k := range keys {
		if i%(total/dying) == 0 {
			dead = append(dead, k)
		}
	}

	transfers := 0
	transfer := func(to *harness.Node) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
		defer cancel()
		if err := c.TransferLeadership(ctx, to); err != nil {
			t.Fatal(err)
		}
		transfers++
		t.Logf("%s leads", to)
	}
	transfer(skewed)
	b.Halt(dead...)
	// Longer than the TTL plus the failover grace: a leader that judged
	// beats by its own skewed clock would expire (or never expire) them.
	passTime(t, liveTTL+failoverGrace+time.Second)
	transfer(leader)
	passTime(t, liveTTL+time.Second)

	b.Stop()
	syncRecorder(t, c, rec)
	events := rec.Events()
	beats := b.Records()
	ttlOf := func(harness.InstanceKey) time.Duration { return liveTTL }
	suspectOf := func(harness.InstanceKey) time.Duration { return liveSuspect }
	falseExp := check.FalseExpirations(events, beats, ttlOf)
	for i, f := range falseExp {
		if i < 10 {
			t.Errorf("false expiration: %v", f)
		}
	}
	falseSus := check.FalseSuspicions(events, beats, suspectOf)
	for i, f := range falseSus {
		if i < 10 {
			t.Logf("false suspicion (reported, not failed): %v", f)
		}
	}
	var liveExpired int
	for _, e := range rec.EventsOf(typeExpired) {
		if r, ok := beats[e.Key()]; ok && !r.Halted {
			liveExpired++
		}
	}
	if liveExpired > 0 {
		t.Errorf("%d beating instances expired", liveExpired)
	}
	sameStateEverywhere(t, c, services)
	sameHashEverywhere(t, c)
	lat := check.DetectionLatencies(events, beats, dead)
	t.Logf("%d instances (%d halted), leadership transfers %d, false suspicions %d, detection %v",
		total, dying, transfers, len(falseSus), lat)
	// The skewed node led when they stopped beating. Ahead or behind, it
	// removes them within the bound across a leader change, in the previous
	// leader's time: a leader whose clock is behind continues from that
	// leader's time base instead of waiting for its own clock to catch up.
	if bound := max(liveTTL, failoverGrace+liveInterval) + sweepInterval + detectionSlack; lat.N != dying || lat.Max > bound {
		t.Errorf("detection %v: want all %d halted instances removed within %v of their last beat", lat, dying, bound)
	}
	report(reportRow{Scenario: fmt.Sprintf("clock offset %+v on one node", offset), Ops: total, Faults: transfers,
		Lost: notApplicable, FalseExpirations: len(falseExp), StaleReads: notApplicable, Detection: lat})
}
