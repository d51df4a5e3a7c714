package beatcheck

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
)

// classifyTime is the checker's classify as it was written on time.Time
// values before the sweep moved to integer nanoseconds: the reference the
// fast path must agree with.
func classifyTime(in *fsm.Instance, now, fence time.Time) verdict {
	last := time.Unix(0, in.LastBeatAt)
	switch {
	case !now.Before(later(last.Add(in.TTL), fence)):
		return expire
	case now.Before(later(last.Add(in.SuspectAfter), fence)):
		return keep
	case in.State == fsm.StateHealthy:
		return suspect
	default:
		return quiet
	}
}

// TestSweepClockAgreesWithTimeArithmetic: the sweep's integer path gives
// the verdict the time.Time definition gives, for random instances around
// their deadlines and fences, including a zero (long ago) grace start, a
// pending stall, negative and zero durations and exact boundaries.
func TestSweepClockAgreesWithTimeArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 16))
	grace := 2 * time.Second
	pick := func(ds ...time.Duration) time.Duration { return ds[rng.IntN(len(ds))] }
	offset := func() time.Duration {
		return pick(0, 1, -1, time.Second, 3*time.Second, 5*time.Second, -time.Hour,
			time.Duration(rng.Int64N(int64(20*time.Second)))-10*time.Second)
	}
	counts := map[verdict]int{}
	for i := range 200_000 {
		now := t0.Add(time.Duration(rng.Int64N(int64(time.Minute))))
		in := &fsm.Instance{
			BeatInterval: pick(0, time.Second, 10*time.Second),
			SuspectAfter: pick(0, 3*time.Second, -5, 2500*time.Millisecond),
			TTL:          pick(0, 5*time.Second, -5, 30*time.Second),
			State:        []fsm.InstanceState{fsm.StateHealthy, fsm.StateSuspect}[rng.IntN(2)],
			LastBeatAt:   now.Add(-offset()).UnixNano(),
		}
		var f fences
		if rng.IntN(4) > 0 {
			f.graceFrom = now.Add(-offset())
		}
		if rng.IntN(3) == 0 {
			f.stallUntil = now.Add(offset())
		}
		want := classifyTime(in, now, f.fence(in, grace))
		got := f.clock(now, grace).classify(in)
		if got != want {
			t.Fatalf("case %d: sweep clock says %d, time arithmetic says %d; now %v, fences %+v, instance %+v",
				i, got, want, now, f, in)
		}
		counts[want]++
	}
	for _, v := range []verdict{keep, quiet, suspect, expire} {
		if counts[v] == 0 {
			t.Errorf("no case had verdict %d: the cases do not cover it", v)
		}
	}
}

func TestAddSatSaturates(t *testing.T) {
	const maxI, minI = int64(^uint64(0) >> 1), -int64(^uint64(0)>>1) - 1
	for _, tt := range []struct {
		ns   int64
		d    time.Duration
		want int64
	}{
		{1, 2, 3},
		{maxI - 1, 5, maxI},
		{minI + 1, -5, minI},
		{minI, time.Second, minI + int64(time.Second)},
	} {
		if got := addSat(tt.ns, tt.d); got != tt.want {
			t.Errorf("addSat(%d, %d) = %d, want %d", tt.ns, tt.d, got, tt.want)
		}
	}
	if got := unixNanos(time.Time{}); got != minI {
		t.Errorf("unixNanos(zero time) = %d, want the minimum", got)
	}
}
