package beatcheck

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// inst is an instance that beat at lastBeat, with interval 1s, suspect
// after 3s and TTL 5s.
func inst(lastBeat time.Time, state fsm.InstanceState) *fsm.Instance {
	return &fsm.Instance{
		Service: "s", ID: "i", Incarnation: 1, LastBeatIndex: 7,
		BeatInterval: time.Second, SuspectAfter: 3 * time.Second, TTL: 5 * time.Second,
		State: state, LastBeatAt: lastBeat.UnixNano(),
	}
}

func TestClassifyHonoursTheDeadlinesAndTheFence(t *testing.T) {
	grace := 2 * time.Second
	longAgo := fences{graceFrom: t0.Add(-time.Hour)}
	tests := []struct {
		name string
		in   *fsm.Instance
		now  time.Time
		f    fences
		want verdict
	}{
		{"fresh beat", inst(t0, fsm.StateHealthy), t0.Add(time.Second), longAgo, keep},
		{"just before suspect_after", inst(t0, fsm.StateHealthy), t0.Add(3*time.Second - 1), longAgo, keep},
		{"at suspect_after", inst(t0, fsm.StateHealthy), t0.Add(3 * time.Second), longAgo, suspect},
		{"already suspect, before TTL", inst(t0, fsm.StateSuspect), t0.Add(4 * time.Second), longAgo, quiet},
		{"just before TTL", inst(t0, fsm.StateSuspect), t0.Add(5*time.Second - 1), longAgo, quiet},
		{"at TTL", inst(t0, fsm.StateSuspect), t0.Add(5 * time.Second), longAgo, expire},
		{"past TTL while healthy", inst(t0, fsm.StateHealthy), t0.Add(6 * time.Second), longAgo, expire},
		// A new leader promoted at t0+4s: the instance (TTL due at t0+5s)
		// gets until t0+4s+2s grace+1s interval = t0+7s.
		{"fence after promotion holds the expiry", inst(t0, fsm.StateSuspect), t0.Add(6 * time.Second), fences{graceFrom: t0.Add(4 * time.Second)}, keep},
		{"fence after promotion holds the suspicion", inst(t0, fsm.StateHealthy), t0.Add(6 * time.Second), fences{graceFrom: t0.Add(4 * time.Second)}, keep},
		{"fence passed", inst(t0, fsm.StateHealthy), t0.Add(7 * time.Second), fences{graceFrom: t0.Add(4 * time.Second)}, expire},
		// The fence never shortens a deadline: a beat long after promotion
		// still gets its full TTL.
		{"fence never shortens", inst(t0.Add(10*time.Second), fsm.StateHealthy), t0.Add(14 * time.Second), fences{graceFrom: t0}, suspect},
		{"stall fence", inst(t0, fsm.StateSuspect), t0.Add(8 * time.Second), fences{graceFrom: t0.Add(-time.Hour), stallUntil: t0.Add(9 * time.Second)}, keep},
		{"stall fence passed", inst(t0, fsm.StateSuspect), t0.Add(9 * time.Second), fences{graceFrom: t0.Add(-time.Hour), stallUntil: t0.Add(9 * time.Second)}, expire},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.in, tt.now, tt.f.fence(tt.in, grace)); got != tt.want {
				t.Errorf("classify = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestGuardEngagesOnAShareOfTheLiveSetAboveTheMinimum(t *testing.T) {
	tests := []struct {
		silent, inWindow, live int
		want                   bool
	}{
		{0, 0, 100, false},
		{30, 0, 100, false}, // exactly 30 %: not more than the share
		{31, 0, 100, true},
		{10, 0, 20, false}, // 50 % but not above the minimum count of 10
		{11, 0, 20, true},
		{20, 20, 80, true},  // 40 of the 100 at the window's start
		{5, 20, 200, false}, // 25 of 220
		{80, 0, 100, true},  // 80 % of beaters cut at once
	}
	for _, tt := range tests {
		if got := guardEngaged(tt.silent, tt.inWindow, tt.live, 0.3, 10); got != tt.want {
			t.Errorf("guardEngaged(silent %d, in window %d, live %d) = %v, want %v", tt.silent, tt.inWindow, tt.live, got, tt.want)
		}
	}
}

func dues(service string, n int, healthy bool) []due {
	out := make([]due, n)
	for i := range n {
		out[i] = due{cond: &fsmpb.Condition{Service: service, Id: fmt.Sprint(i), Incarnation: 1}, healthy: healthy}
	}
	return out
}

func condIDs(conds []*fsmpb.Condition) []string {
	var out []string
	for _, c := range conds {
		out = append(out, c.Service+"/"+c.Id)
	}
	return out
}

func TestMakePlan(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxExpiriesPerSweep = 3
	cfg.MaxSuspectsPerSweep = 4
	rng := rand.New(rand.NewPCG(1, 2))

	t.Run("below the guard everything due is proposed, capped", func(t *testing.T) {
		p := makePlan(dues("a", 2, true), dues("b", 2, false), 4, 1000, 0, false, &cfg, rng)
		if p.guard || p.held != 0 || len(p.suspect) != 2 || len(p.expire) != 2 {
			t.Fatalf("plan %+v: want 2 suspects, 2 expiries, no guard", p)
		}
		p = makePlan(dues("a", 9, true), dues("b", 9, false), 18, 1000, 0, false, &cfg, rng)
		if len(p.suspect) != 4 || len(p.expire) != 3 {
			t.Errorf("plan: %d suspects, %d expiries; want the caps 4 and 3", len(p.suspect), len(p.expire))
		}
	})
	t.Run("the guard holds expiries and marks their healthy instances suspect", func(t *testing.T) {
		toExpire := append(dues("a", 10, false), dues("b", 2, true)...)
		p := makePlan(nil, toExpire, 12, 20, 0, false, &cfg, rng)
		if !p.guard || p.held != 12 || len(p.expire) != 0 {
			t.Fatalf("plan %+v: want the guard holding 12 expiries", p)
		}
		if diff := cmp.Diff([]string{"b/0", "b/1"}, condIDs(p.suspect), cmpSorted); diff != "" {
			t.Errorf("suspects (-want +got):\n%s", diff)
		}
	})
	t.Run("silent instances engage the guard before any is due", func(t *testing.T) {
		// 27 of 100 are due; 53 more went silent a sweep later: 80 % are
		// silent, so the 27 are held, not removed.
		p := makePlan(nil, dues("a", 27, false), 80, 100, 0, false, &cfg, rng)
		if !p.guard || p.held != 27 || len(p.expire) != 0 {
			t.Errorf("plan %+v: want the guard holding the 27 due", p)
		}
	})
	t.Run("a released guard lets the expiries go", func(t *testing.T) {
		p := makePlan(nil, dues("a", 12, false), 12, 20, 0, true, &cfg, rng)
		if !p.guard || len(p.expire) != 3 {
			t.Errorf("plan %+v: want the guard reported and 3 (capped) expiries", p)
		}
	})
	t.Run("caps take instances at random across services", func(t *testing.T) {
		cfg := cfg
		cfg.GuardShare, cfg.MaxExpiriesPerSweep = 1, 10
		seen := map[string]int{}
		for range 200 {
			toExpire := append(dues("a", 50, false), dues("b", 50, false)...)
			for _, c := range makePlan(nil, toExpire, 100, 1000, 0, false, &cfg, rng).expire {
				seen[c.Service]++
			}
		}
		if seen["a"] < 700 || seen["b"] < 700 {
			t.Errorf("expiries by service over 200 sweeps: %v; want both near 1000", seen)
		}
	})
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})
