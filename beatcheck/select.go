package beatcheck

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

// fences are the times before which no deadline may fall.
type fences struct {
	// graceFrom is the latest promotion or wall clock jump: an instance is
	// not due before graceFrom + FailoverGrace + its own beat interval.
	graceFrom time.Time
	// stallUntil is the end of the latest stall plus its length.
	stallUntil time.Time
}

// fence returns the earliest time in may be suspected or removed.
func (f fences) fence(in *fsm.Instance, grace time.Duration) time.Time {
	g := f.graceFrom.Add(grace + in.BeatInterval)
	if f.stallUntil.After(g) {
		return f.stallUntil
	}
	return g
}

// verdict is what a sweep does to one instance.
type verdict uint8

const (
	// keep: the instance beat within its suspect_after (or is fenced).
	keep verdict = iota
	// quiet: already SUSPECT, not yet due to expire.
	quiet
	// suspect: HEALTHY, past max(lastBeat + suspect_after, fence).
	suspect
	// expire: past max(lastBeat + TTL, fence).
	expire
)

// classify decides the verdict on one instance at now: expire once
// max(lastBeat + TTL, fence) has passed, suspect (if HEALTHY) once
// max(lastBeat + SuspectAfter, fence) has. Every verdict but keep means
// the instance is silent: no beat for its suspect_after.
func classify(in *fsm.Instance, now, fence time.Time) verdict {
	return classifyNs(in, unixNanos(now), unixNanos(fence))
}

// classifyNs is classify on Unix nanoseconds: integer arithmetic, which a
// sweep of every instance ten times a second can afford at a million
// instances (time.Time arithmetic was most of the sweep's cost).
func classifyNs(in *fsm.Instance, now, fence int64) verdict {
	switch {
	case now >= max(addSat(in.LastBeatAt, in.TTL), fence):
		return expire
	case now < max(addSat(in.LastBeatAt, in.SuspectAfter), fence):
		return keep
	case in.State == fsm.StateHealthy:
		return suspect
	default:
		return quiet
	}
}

// sweepClock is one sweep's time and fences in Unix nanoseconds, computed
// once so that the per-instance work is integer arithmetic.
type sweepClock struct {
	now int64
	// graceBase is graceFrom + FailoverGrace; an instance's grace fence
	// adds its beat interval.
	graceBase  int64
	stallUntil int64
}

// clock returns the sweep clock of f at now with the failover grace.
func (f fences) clock(now time.Time, grace time.Duration) sweepClock {
	return sweepClock{
		now:        unixNanos(now),
		graceBase:  addSat(unixNanos(f.graceFrom), grace),
		stallUntil: unixNanos(f.stallUntil),
	}
}

// classify is classify(in, now, f.fence(in, grace)) for the f, now and
// grace the clock was made of.
func (c sweepClock) classify(in *fsm.Instance) verdict {
	return classifyNs(in, c.now, max(addSat(c.graceBase, in.BeatInterval), c.stallUntil))
}

var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// unixNanos returns t in Unix nanoseconds, clamped to the int64 range (the
// zero time.Time, a "long ago" fence, is before it).
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minUnixNano):
		return math.MinInt64
	case t.After(maxUnixNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// addSat returns ns + d, saturated at the int64 range.
func addSat(ns int64, d time.Duration) int64 {
	sum := ns + int64(d)
	switch {
	case d > 0 && sum < ns:
		return math.MaxInt64
	case d < 0 && sum > ns:
		return math.MinInt64
	}
	return sum
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// due is an instance a sweep acts on, with the state the checker saw.
type due struct {
	cond    *fsmpb.Condition
	healthy bool
}

// plan is what one sweep proposes.
type plan struct {
	suspect []*fsmpb.Condition
	expire  []*fsmpb.Condition
	// held is the number of expiries the guard holds back.
	held int
	// guard reports that the mass-expiry guard is engaged.
	guard bool
}

// guardEngaged reports whether too many instances have gone silent: the
// silent ones (no beat for their suspect_after) and those expired in the
// window are more than share of the live set at the window's start (the
// current live set plus those expired in the window) and more than
// minCount. Counting the silent, not only the due, matters: instances cut
// off together go silent within one beat interval of each other, which is
// before the first of them is due to expire (suspect_after + beat_interval
// ≤ TTL), so the guard engages before anything is removed.
func guardEngaged(silent, expiredInWindow, live int, share float64, minCount int) bool {
	lost := silent + expiredInWindow
	return lost > minCount && float64(lost) > share*float64(live+expiredInWindow)
}

// makePlan turns the sweep's findings into proposals. toSuspect are the
// HEALTHY instances past their suspect deadline, toExpire those past their
// TTL deadline, silent the count of every instance past its suspect
// deadline (those two and the SUSPECT ones not yet due). Both lists are
// shuffled, so that caps take instances at random across services. With
// the guard engaged and not released, expiries are held and their HEALTHY
// instances are marked SUSPECT instead.
func makePlan(toSuspect, toExpire []due, silent, live, expiredInWindow int, released bool, cfg *Config, rng *rand.Rand) plan {
	var p plan
	// With no silent instance there is nothing to hold: the guard is off.
	p.guard = silent > 0 && guardEngaged(silent, expiredInWindow, live, cfg.GuardShare, cfg.GuardMinCount)
	if p.guard && !released {
		p.held = len(toExpire)
		for _, d := range toExpire {
			if d.healthy {
				toSuspect = append(toSuspect, d)
			}
		}
		toExpire = nil
	}
	rng.Shuffle(len(toSuspect), func(i, j int) { toSuspect[i], toSuspect[j] = toSuspect[j], toSuspect[i] })
	rng.Shuffle(len(toExpire), func(i, j int) { toExpire[i], toExpire[j] = toExpire[j], toExpire[i] })
	for _, d := range toSuspect[:min(len(toSuspect), cfg.MaxSuspectsPerSweep)] {
		p.suspect = append(p.suspect, d.cond)
	}
	for _, d := range toExpire[:min(len(toExpire), cfg.MaxExpiriesPerSweep)] {
		p.expire = append(p.expire, d.cond)
	}
	return p
}
