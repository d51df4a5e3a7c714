package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// These tests hold the expiry checker (package beatcheck) to the rules and
// bounds of its doc.go, measured the way a client sees them: the time of an
// instance's last acknowledged beat (harness.Beater) against the time its
// SUSPECT and EXPIRED events arrive on a watch (harness.EventRecorder).

const (
	typeSuspect    = registryv1.EventType_EVENT_TYPE_SUSPECT
	typeReacquired = registryv1.EventType_EVENT_TYPE_REACQUIRED
	typeExpired    = registryv1.EventType_EVENT_TYPE_EXPIRED
)

func TestDeadInstanceIsSuspectedThenExpiredWithinTheBound(t *testing.T) {
	const (
		total = 100
		dead  = 20 // below the mass-expiry guard's 30 %
	)
	report := startScenario(t)
	// The leader applies first and is left alone: watch it.
	f := startFleet(t, harness.Options{}, "stable", 4, total, true)
	c, leader, term, rec, b, instances, services := f.c, f.leader, f.term, f.rec, f.b, f.instances, f.services

	var dying, living []harness.InstanceKey
	for i, k := range keysOf(instances) {
		if i%(total/dead) == 0 {
			dying = append(dying, k)
		} else {
			living = append(living, k)
		}
	}
	b.Halt(dying...)
	poll.Eventually(t, liveTTL+replicationTimeout, haveEvents(rec, typeExpired, dying))
	syncRecorder(t, c, rec)

	suspects, expiries := eventsByKey(rec.EventsOf(typeSuspect)), eventsByKey(rec.EventsOf(typeExpired))
	expiryBound := liveTTL + sweepInterval + detectionSlack
	suspectBound := liveSuspect + sweepInterval + detectionSlack
	var toSuspect, toExpire, serverSide latencies
	for _, k := range dying {
		r, _ := b.Record(k)
		// The registry's last beat is no later than the last call that
		// carried one, acknowledged or not.
		last := later(r.LastAck, r.LastSent)
		exp := expiries[k]
		s, ok := suspects[k]
		if !ok {
			t.Errorf("%s: EXPIRED at index %d without a SUSPECT event before it", k, exp.GetIndex())
		} else {
			if s.GetIndex() >= exp.GetIndex() {
				t.Errorf("%s: SUSPECT at index %d, not before EXPIRED at index %d", k, s.GetIndex(), exp.GetIndex())
			}
			lat := s.ReceivedAt.Sub(r.LastAck)
			toSuspect = append(toSuspect, lat)
			if lat < liveSuspect-ackTolerance {
				t.Errorf("%s: SUSPECT %v after its last acknowledged beat, suspect_after is %v", k, lat, liveSuspect)
			}
			if d := s.ReceivedAt.Sub(last); d > suspectBound {
				t.Errorf("%s: SUSPECT %v after its last beat, bound %v", k, d, suspectBound)
			}
			if d := s.GetSinceLastBeat().AsDuration(); d < liveSuspect {
				t.Errorf("%s: SUSPECT with since_last_beat %v by the leader's clock, suspect_after is %v", k, d, liveSuspect)
			}
		}
		lat := exp.ReceivedAt.Sub(r.LastAck)
		toExpire = append(toExpire, lat)
		serverSide = append(serverSide, exp.GetSinceLastBeat().AsDuration())
		if lat < liveTTL-ackTolerance {
			t.Errorf("%s: EXPIRED %v after its last acknowledged beat, ttl is %v", k, lat, liveTTL)
		}
		if d := exp.ReceivedAt.Sub(last); d > expiryBound {
			t.Errorf("%s: EXPIRED %v after its last beat, bound %v", k, d, expiryBound)
		}
		if d := exp.GetSinceLastBeat().AsDuration(); d < liveTTL {
			t.Errorf("%s: EXPIRED with since_last_beat %v by the leader's clock, ttl is %v", k, d, liveTTL)
		}
	}
	t.Logf("detection stable leader: %s bound=[%v, %v] (ttl %v, sweep %v, slack %v)",
		toExpire.summary(), liveTTL-ackTolerance, expiryBound, liveTTL, sweepInterval, detectionSlack)
	t.Logf("suspicion stable leader: %s bound=[%v, %v]", toSuspect.summary(), liveSuspect-ackTolerance, suspectBound)
	t.Logf("expiry by the leader's clock (since_last_beat): %s", serverSide.summary())

	for _, typ := range []registryv1.EventType{typeSuspect, typeExpired, typeReacquired} {
		byKey := eventsByKey(rec.EventsOf(typ, services...))
		for _, k := range living {
			if ev, ok := byKey[k]; ok {
				t.Errorf("%s, beating all along, got a %v event:%s", k, typ, describeEvents([]harness.RecordedEvent{ev}, 1))
			}
		}
	}
	if st := b.Stats(); st.Unknown+st.Fenced > 0 {
		t.Errorf("beats rejected: %d UNKNOWN, %d FENCED", st.Unknown, st.Fenced)
	}
	checkTerm(t, leader, term)
	report(reportRow{Scenario: "dead instances, stable leader", Ops: total, Faults: dead, Lost: notApplicable,
		FalseExpirations: checkFalseExpirations(t, rec, b), StaleReads: notApplicable, Detection: check.Percentiles(toExpire)})
}

func TestNoFalseExpiryWhileTheLeaderIsKilledThreeTimes(t *testing.T) {
	const kills = 3
	n := 500
	if testing.Short() {
		n = 100
	}
	f := startFleet(t, harness.Options{}, "kill", 5, n, false)
	c, rec, b, instances, services := f.c, f.rec, f.b, f.instances, f.services

	for round := 1; round <= kills; round++ {
		old := c.Leader()
		killedAt := time.Now()
		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		leader, checkerAt := newLeaderAfter(t, c, old)
		t.Logf("kill %d: SIGKILLed leader %s; %s leads, its checker running %v after the kill",
			round, old, leader, checkerAt.Sub(killedAt).Round(time.Millisecond))
		// Keep a quorum for the next kill.
		if err := old.Restart(); err != nil {
			t.Fatal(err)
		}
		waitLeader(t, c)
		// Every instance has been beaten under the new leader.
		poll.Eventually(t, replicationTimeout, b.AckedSince(checkerAt))
	}
	// Keep beating past the last leader's failover fence and one more TTL:
	// an instance it wrongly expired would be gone by then.
	waitCheckerSteady(t, c.Leader())
	passTime(t, liveTTL)
	checkNoFalseExpiry(t, c, b, rec, instances, services)
}

func TestNoFalseExpiryWhenTheLeaderIsPaused(t *testing.T) {
	const pause = 2 * time.Second
	n := 500
	if testing.Short() {
		n = 100
	}
	f := startFleet(t, harness.Options{}, "pause", 5, n, false)
	c, leader, term, rec, b, instances, services := f.c, f.leader, f.term, f.rec, f.b, f.instances, f.services

	if err := leader.Pause(); err != nil {
		t.Fatal(err)
	}
	passTime(t, pause)
	if err := leader.Resume(); err != nil {
		t.Fatal(err)
	}
	resumedAt := time.Now()
	now := waitLeader(t, c)
	s, err := now.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGSTOPped leader %s (term %d) for %v; now %s leads in term %d", leader, term, pause, now, s.GetTerm())
	poll.Eventually(t, replicationTimeout, b.AckedSince(resumedAt))
	// Keep beating past the fence (failover or stall) and one more TTL.
	waitCheckerSteady(t, now)
	passTime(t, liveTTL)
	checkNoFalseExpiry(t, c, b, rec, instances, services)
}

func TestInstancesThatDieBeforeALeaderChangeAreStillRemoved(t *testing.T) {
	const (
		total = 100
		dead  = 15 // below the mass-expiry guard's 30 %
		// The instances die this long before the leader.
		shortly = 300 * time.Millisecond
	)
	report := startScenario(t)
	// The followers survive: watch them.
	f := startFleet(t, harness.Options{}, "cross", 4, total, false)
	c, leader, rec, b, instances, services := f.c, f.leader, f.rec, f.b, f.instances, f.services

	var dying, living []harness.InstanceKey
	for i, k := range keysOf(instances) {
		if len(dying) < dead && i%(total/dead) == 0 {
			dying = append(dying, k)
		} else {
			living = append(living, k)
		}
	}
	b.Halt(dying...)
	passTime(t, shortly)
	killedAt := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	newLeader, checkerAt := newLeaderAfter(t, c, leader)
	t.Logf("SIGKILLed leader %s %v after %d instances stopped beating; %s leads, its checker running %v after the kill",
		leader, shortly, len(dying), newLeader, checkerAt.Sub(killedAt).Round(time.Millisecond))
	poll.Eventually(t, failoverGrace+liveInterval+liveTTL+replicationTimeout, haveEvents(rec, typeExpired, dying))
	syncRecorder(t, c, rec)

	// promotedAt ≤ checkerAt, so this bound is an upper estimate of the
	// documented max(lastBeat + ttl, promotedAt + grace + interval) + sweep
	// + commit. The new leader was promoted after the kill, so its fence
	// ends after killedAt + grace + interval.
	fenceFloor := killedAt.Add(failoverGrace + liveInterval)
	expiries := eventsByKey(rec.EventsOf(typeExpired))
	var detection latencies
	var widest time.Duration
	for _, k := range dying {
		r, _ := b.Record(k)
		last := later(r.LastAck, r.LastSent)
		exp := expiries[k]
		bound := later(last.Add(liveTTL), checkerAt.Add(failoverGrace+liveInterval)).Add(sweepInterval + detectionSlack)
		widest = max(widest, bound.Sub(r.LastAck))
		lat := exp.ReceivedAt.Sub(r.LastAck)
		detection = append(detection, lat)
		if lat < liveTTL-ackTolerance {
			t.Errorf("%s: EXPIRED %v after its last acknowledged beat, ttl is %v", k, lat, liveTTL)
		}
		if exp.ReceivedAt.Before(fenceFloor) {
			t.Errorf("%s: EXPIRED %v after the leader's kill, before the failover fence (grace %v + interval %v)",
				k, exp.ReceivedAt.Sub(killedAt), failoverGrace, liveInterval)
		}
		if exp.ReceivedAt.After(bound) {
			t.Errorf("%s: EXPIRED %v after its last beat, %v after the new leader's checker started; bound %v after its last beat",
				k, exp.ReceivedAt.Sub(last), exp.ReceivedAt.Sub(checkerAt), bound.Sub(last))
		}
		if d := exp.GetSinceLastBeat().AsDuration(); d < liveTTL {
			t.Errorf("%s: EXPIRED with since_last_beat %v by the leader's clock, ttl is %v", k, d, liveTTL)
		}
	}
	t.Logf("detection across leader change: %s bound=[%v, ≤%v] (max(lastBeat+ttl, promoted+grace+interval)+sweep+slack, promoted ≤ checker seen running %v after the kill)",
		detection.summary(), liveTTL-ackTolerance, widest.Round(time.Millisecond), checkerAt.Sub(killedAt).Round(time.Millisecond))

	for _, k := range living {
		if ev, ok := expiries[k]; ok {
			t.Errorf("%s, beating all along, was expired:%s", k, describeEvents([]harness.RecordedEvent{ev}, 1))
		}
	}
	suspected := eventsByKey(rec.EventsOf(typeSuspect, services...))
	falseSuspects := 0
	for _, k := range living {
		if _, ok := suspected[k]; ok {
			falseSuspects++
		}
	}
	t.Logf("%d of %d beating instances were suspected across the leader change (allowed, ideally none)", falseSuspects, len(living))
	if st := b.Stats(); st.Unknown+st.Fenced > 0 {
		t.Errorf("beats rejected: %d UNKNOWN, %d FENCED", st.Unknown, st.Fenced)
	}
	report(reportRow{Scenario: "dead instances, leader killed 300 ms later", Ops: total, Faults: dead + 1, Lost: notApplicable,
		FalseExpirations: checkFalseExpirations(t, rec, b), StaleReads: notApplicable, Detection: check.Percentiles(detection),
		Failover: check.Percentiles([]time.Duration{checkerAt.Sub(killedAt)})})
}

func TestMassExpiryGuardEngagesAndClears(t *testing.T) {
	const (
		total = 100
		cut   = 80 // far above the guard's 30 % and 10 instances
	)
	c := harness.Start(t, harness.Options{})
	leader := waitLeader(t, c)
	rec := harness.NewEventRecorder(t, append([]*harness.Node{leader}, c.Followers()...), t.Logf)
	instances, services := liveInstances("mass", 4, total)
	// The instances to cut are those of one client that beats them all in
	// one call (one lane, added at once), so that one beat batch carries
	// them and they fall due in the same sweep. Instances that fall due in
	// different sweeps are not one mass expiry: the guard lets expiries
	// through until they add up to more than its share (beatcheck doc.go).
	b := harness.NewBeater(t, c.Nodes(), harness.BeaterOptions{Logf: t.Logf})
	registerBeating(t, c.Nodes(), b, instances[cut:])
	registerAll(t, c.Nodes(), 16, instances[:cut])
	group := harness.NewBeater(t, c.Nodes(), harness.BeaterOptions{Lanes: 1, Logf: t.Logf})
	group.Add(instances[:cut]...)
	term := waitCheckerSteady(t, leader)
	poll.Eventually(t, replicationTimeout, b.AckedSince(time.Now()))
	poll.Eventually(t, replicationTimeout, group.AckedSince(time.Now()))

	cutKeys := keysOf(instances[:cut])
	group.Halt(cutKeys...)
	cutAt := time.Now()
	poll.Eventually(t, liveSuspect+replicationTimeout, haveEvents(rec, typeSuspect, cutKeys))

	// guardStatus is the leader's Status, as long as leadership did not
	// move: a new leader would start a new fence and a new guard.
	guardStatus := func(ctx context.Context) (*registryv1.StatusResponse, error) {
		s, err := leader.Status(ctx)
		if err != nil {
			return nil, err
		}
		if s.GetRole() != "leader" || s.GetTerm() != term {
			return nil, fmt.Errorf("leadership moved: %s is %s in term %d, was leader in term %d", leader, s.GetRole(), s.GetTerm(), term)
		}
		return s, nil
	}
	var held uint32
	poll.Eventually(t, liveTTL+replicationTimeout, func(ctx context.Context) error {
		s, err := guardStatus(ctx)
		if err != nil {
			return err
		}
		if !s.GetExpiryGuardEngaged() || s.GetExpiriesHeld() < 1 {
			return fmt.Errorf("guard engaged %v, %d expiries held", s.GetExpiryGuardEngaged(), s.GetExpiriesHeld())
		}
		held = s.GetExpiriesHeld()
		return nil
	})
	engagedAt := time.Now()
	t.Logf("guard engaged %v after %d of %d instances stopped beating, holding %d expiries",
		engagedAt.Sub(cutAt).Round(time.Millisecond), cut, total, held)

	// It holds: for one more TTL nothing is removed.
	passTime(t, liveTTL)
	s, err := guardStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !s.GetExpiryGuardEngaged() {
		t.Fatalf("the guard cleared while the %d instances were still silent (%d held)", cut, s.GetExpiriesHeld())
	}
	syncRecorder(t, c, rec)
	if expired := rec.EventsOf(typeExpired, services...); len(expired) > 0 {
		t.Fatalf("%d instances expired before the guard was seen engaged or while it was (the %d that fell silent together were due in one sweep):%s",
			len(expired), cut, describeEvents(expired, 10))
	}

	group.Resume(cutKeys...)
	resumedAt := time.Now()
	poll.Eventually(t, replicationTimeout, haveEvents(rec, typeReacquired, cutKeys))
	reacquiredAt := time.Now()
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		s, err := guardStatus(ctx)
		if err != nil {
			return err
		}
		if s.GetExpiryGuardEngaged() {
			return fmt.Errorf("guard still engaged, %d expiries held", s.GetExpiriesHeld())
		}
		return nil
	})
	t.Logf("beats resumed: all %d REACQUIRED within %v, the guard cleared within %v",
		cut, reacquiredAt.Sub(resumedAt).Round(time.Millisecond), time.Since(resumedAt).Round(time.Millisecond))

	present := linearizableInstances(t, c, services)
	syncRecorder(t, c, rec)
	for _, in := range instances {
		got, ok := present[harness.KeyOf(in)]
		switch {
		case !ok:
			t.Errorf("%s is missing from a LINEARIZABLE read", harness.KeyOf(in))
		case got.GetState() != registryv1.InstanceState_INSTANCE_STATE_HEALTHY:
			t.Errorf("%s is %v after its beats resumed", harness.KeyOf(in), got.GetState())
		}
	}
	if expired := rec.EventsOf(typeExpired, services...); len(expired) > 0 {
		t.Errorf("%d instances expired:%s", len(expired), describeEvents(expired, 10))
	}
	suspected := eventsByKey(rec.EventsOf(typeSuspect, services...))
	for _, k := range keysOf(instances[cut:]) {
		if ev, ok := suspected[k]; ok {
			t.Errorf("%s, beating all along, was suspected:%s", k, describeEvents([]harness.RecordedEvent{ev}, 1))
		}
	}
	for _, st := range []harness.BeatStats{b.Stats(), group.Stats()} {
		if st.Unknown+st.Fenced > 0 {
			t.Errorf("beats rejected: %d UNKNOWN, %d FENCED", st.Unknown, st.Fenced)
		}
	}
	checkTerm(t, leader, term)
}

// checkTerm fails the test if leader no longer leads in term: a stable
// leader test measured something else.
func checkTerm(t *testing.T, leader *harness.Node, term uint64) {
	t.Helper()
	s, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.GetRole() != "leader" || s.GetTerm() != term {
		t.Fatalf("leadership moved during the test: %s is %s in term %d, was leader in term %d", leader, s.GetRole(), s.GetTerm(), term)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
