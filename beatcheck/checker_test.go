package beatcheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a leader without Raft: a real fsm that proposals are applied to
// in order, the way Raft would apply them.
type rig struct {
	*fsmtest.Replica
	t         *testing.T
	f         *fsm.FSM
	notLeader atomic.Bool
	verifies  atomic.Int64
	// stallOnce, when set, makes the next scan sleep that long: the checker
	// is paused as by a GC pause or SIGSTOP.
	stallOnce atomic.Int64
}

func newRig(t *testing.T) *rig {
	f := fsm.New(fsm.Config{})
	return &rig{Replica: &fsmtest.Replica{FSM: f}, t: t, f: f}
}

func (r *rig) apply(msg proto.Message) any { return r.ApplyMsg(r.t, msg) }

// Apply implements fsm.Proposer: it fails as the node does when the rig
// does not lead.
func (r *rig) Apply(ctx context.Context, e fsm.Entry) (any, error) {
	if r.notLeader.Load() {
		return nil, fmt.Errorf("%w: not the leader", fsm.ErrLeadershipLost)
	}
	return r.Replica.Apply(ctx, e)
}

func (r *rig) VerifyLeader(context.Context) error {
	r.verifies.Add(1)
	if r.notLeader.Load() {
		return fsm.ErrLeadershipLost
	}
	return nil
}

func (r *rig) ScanInstances(fn func(*fsm.Instance)) {
	if d := r.stallOnce.Swap(0); d > 0 {
		time.Sleep(time.Duration(d))
	}
	ins, _ := r.f.Instances()
	for i := range ins {
		fn(&ins[i])
	}
}

// register registers ids with interval 1s, suspect after 3s, TTL 5s, at
// the (simulated) current time.
func (r *rig) register(ids ...string) {
	for _, id := range ids {
		r.apply(&fsmpb.Register{
			Service: "s", Id: id, Address: "h:1", Incarnation: 1,
			BeatIntervalNs: int64(time.Second), SuspectAfterNs: int64(3 * time.Second), TtlNs: int64(5 * time.Second),
			NowUnixNs: time.Now().UnixNano(),
		})
	}
}

func (r *rig) beat(ids ...string) {
	b := &fsmpb.BeatBatch{NowUnixNs: time.Now().UnixNano()}
	for _, id := range ids {
		b.Beats = append(b.Beats, &fsmpb.Beat{Service: "s", Id: id, Incarnation: 1})
	}
	r.apply(b)
}

// events returns "TYPE id" for every event of the given types, in order.
func (r *rig) events(types ...fsm.EventType) []string {
	evs, _, err := r.f.EventsAfter("", 0, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		for _, ty := range types {
			if ev.Type == ty {
				out = append(out, fmt.Sprintf("%v %s", ev.Type, ev.Instance.ID))
			}
		}
	}
	return out
}

func (r *rig) has(id string) bool {
	_, ok := r.f.Instance("s", id)
	return ok
}

// start runs a checker promoted now; the returned stop cancels and waits.
func (r *rig) start(cfg Config) (*Checker, func()) {
	c, err := New(cfg, r, r)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	promoted := time.Now()
	go func() { defer close(done); c.Run(ctx, promoted) }()
	return c, func() { cancel(); <-done }
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestUnderAStableLeaderADeadInstanceIsSuspectedThenRemovedOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		// The leader has led for a while: the failover fence is long past.
		_, stop := r.start(Config{})
		defer stop()
		time.Sleep(10 * time.Second)
		r.register("dead")
		registered := time.Now()

		time.Sleep(3*time.Second - time.Millisecond)
		synctest.Wait()
		if got := r.events(fsm.EventSuspect); len(got) != 0 {
			t.Fatalf("suspected before suspect_after: %v", got)
		}
		time.Sleep(100*time.Millisecond + time.Millisecond) // one sweep past the deadline
		synctest.Wait()
		if got := r.events(fsm.EventSuspect); len(got) != 1 {
			t.Fatalf("not SUSPECT one sweep after suspect_after: %v", got)
		}
		time.Sleep(2*time.Second - 100*time.Millisecond - 2*time.Millisecond)
		synctest.Wait()
		if !r.has("dead") {
			t.Fatalf("removed %v after its last beat, before its TTL of 5s", time.Since(registered))
		}
		time.Sleep(100*time.Millisecond + 2*time.Millisecond)
		synctest.Wait()
		if r.has("dead") {
			t.Fatalf("still registered %v after its last beat: the bound is TTL + one sweep", time.Since(registered))
		}
	})
}

func TestABeatingInstanceIsNeverSuspected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		_, stop := r.start(Config{})
		defer stop()
		r.register("live")
		for range 30 {
			time.Sleep(time.Second)
			r.beat("live")
		}
		synctest.Wait()
		if got := r.events(fsm.EventSuspect, fsm.EventExpired); len(got) != 0 {
			t.Errorf("events for a beating instance: %v", got)
		}
	})
}

func TestANewLeaderGrantsTheFailoverGraceInsteadOfAFullTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		// Beats stamped by the old leader; then 4s with no leader.
		r.register("a")
		time.Sleep(4 * time.Second)
		_, stop := r.start(Config{FailoverGrace: 2 * time.Second})
		defer stop()
		promoted := time.Now()
		// TTL (due 1s after promotion) is fenced to promotion + 2s grace + 1s interval.
		time.Sleep(3*time.Second - time.Millisecond)
		synctest.Wait()
		if got := r.events(fsm.EventSuspect, fsm.EventExpired); len(got) != 0 {
			t.Fatalf("%v after promotion, inside the fence: %v", time.Since(promoted), got)
		}
		// Not a full TTL again: removed one sweep after the fence.
		time.Sleep(100*time.Millisecond + time.Millisecond)
		synctest.Wait()
		if r.has("a") {
			t.Fatalf("still registered %v after promotion; want removal at the fence (3s) plus one sweep", time.Since(promoted))
		}
	})
}

func TestAStallExtendsDeadlinesAndConfirmsLeadershipFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		_, stop := r.start(Config{})
		defer stop()
		time.Sleep(10 * time.Second)
		r.register("a")
		// The client beats every second, but the leader is paused for 7s:
		// the beats wait behind the pause and land right after it.
		time.Sleep(time.Second)
		r.beat("a")
		r.stallOnce.Store(int64(7 * time.Second))
		// The pause starts at the next sweep (within 100ms) and lasts 7s;
		// the checker sweeps as soon as it resumes, and the beat that waited
		// behind the pause lands 150ms after that: past the TTL of the beat
		// before the pause.
		time.Sleep(7*time.Second + 150*time.Millisecond)
		synctest.Wait()
		if !r.has("a") {
			t.Fatal("expired right after the stall, before the beats that waited behind it could land")
		}
		r.beat("a")
		for range 10 {
			time.Sleep(time.Second)
			r.beat("a")
		}
		synctest.Wait()
		if got := r.events(fsm.EventExpired); len(got) != 0 {
			t.Errorf("expired after a stall although its beats resumed: %v", got)
		}
		if r.verifies.Load() == 0 {
			t.Error("the checker did not confirm its leadership after the stall")
		}
	})
}

func TestTheCheckerStopsQuietlyWhenLeadershipIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, err := New(Config{}, r, r)
		if err != nil {
			t.Fatal(err)
		}
		r.register("dead")
		r.notLeader.Store(true)
		done := make(chan struct{})
		go func() { defer close(done); c.Run(context.Background(), time.Now().Add(-time.Hour)) }()
		time.Sleep(10 * time.Second) // past every deadline: the checker proposes and learns it lost
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run still running after a proposal failed with ErrNotLeader")
		}
		if !r.has("dead") || c.Status().Running {
			t.Errorf("after losing leadership: registered %v, running %v; want true, false", r.has("dead"), c.Status().Running)
		}
	})
}

func TestTheMassExpiryGuardEngagesHoldsAndClearsByItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, stop := r.start(Config{})
		defer stop()
		time.Sleep(10 * time.Second)
		all := ids("i", 100)
		live := all[:20]
		r.register(all...)
		// 80 % of the beaters are cut off for 20s.
		for range 20 {
			time.Sleep(time.Second)
			r.beat(live...)
		}
		synctest.Wait()
		st := c.Status()
		if !st.GuardEngaged || st.Held != 80 {
			t.Fatalf("status %+v: want the guard engaged holding 80 expiries", st)
		}
		if got := r.events(fsm.EventExpired); len(got) != 0 {
			t.Fatalf("expired while the guard was engaged: %d", len(got))
		}
		if got := r.events(fsm.EventSuspect); len(got) != 80 {
			t.Fatalf("%d SUSPECT events, want the 80 cut instances", len(got))
		}
		// They come back.
		for range 3 {
			time.Sleep(time.Second)
			r.beat(all...)
		}
		synctest.Wait()
		if st := c.Status(); st.GuardEngaged {
			t.Fatalf("status %+v: the guard did not clear when beats recovered", st)
		}
		if got := r.events(fsm.EventReacquired); len(got) != 80 {
			t.Errorf("%d REACQUIRED events, want 80", len(got))
		}
	})
}

func TestAnOperatorCanReleaseTheGuard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, stop := r.start(Config{MaxExpiriesPerSweep: 1000})
		defer stop()
		time.Sleep(10 * time.Second)
		all := ids("i", 50)
		r.register(all...)
		for range 10 {
			time.Sleep(time.Second)
			r.beat(all[:10]...)
		}
		synctest.Wait()
		if !c.Status().GuardEngaged {
			t.Fatal("guard not engaged with 80 % of instances dead")
		}
		c.Release()
		time.Sleep(time.Second)
		r.beat(all[:10]...)
		synctest.Wait()
		if got := r.events(fsm.EventExpired); len(got) != 40 {
			t.Errorf("%d expired after the release, want the 40 dead ones", len(got))
		}
		if st := c.Status(); st.GuardEngaged || st.Released {
			t.Errorf("status %+v: the guard should have cleared and the release ended", st)
		}
	})
}

func TestExpiriesPerSweepAreCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, stop := r.start(Config{MaxExpiriesPerSweep: 7, GuardShare: 1})
		defer stop()
		time.Sleep(10 * time.Second)
		r.register(ids("d", 30)...)
		time.Sleep(5*time.Second + time.Millisecond) // all due at once
		time.Sleep(50 * time.Millisecond)            // at most one sweep since
		synctest.Wait()
		if got := len(r.events(fsm.EventExpired)); got != 7 {
			t.Errorf("%d expired in the first sweep, want the cap of 7", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := c.Status().Expired; got != 30 {
			t.Errorf("%d expired after 10 more sweeps, want all 30", got)
		}
	})
}

func TestARestoreGrantsTheFailoverGraceAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, stop := r.start(Config{FailoverGrace: 2 * time.Second})
		defer stop()
		time.Sleep(10 * time.Second)
		r.register("a")
		var backup bytes.Buffer
		if _, err := r.f.WriteSnapshot(&backup); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // long expired
		synctest.Wait()
		if r.has("a") {
			t.Fatal("not expired 10s after its last beat with a TTL of 5s")
		}

		// The backup comes back with its 10s old last beat.
		if err := r.f.Restore(io.NopCloser(&backup)); err != nil {
			t.Fatal(err)
		}
		c.GrantGrace()
		restored, restoredAt := time.Now(), r.f.AppliedIndex()
		time.Sleep(3*time.Second - time.Millisecond) // grace 2s + interval 1s
		synctest.Wait()
		if evs, _, _ := r.f.EventsAfter("", restoredAt, 0); len(evs) != 0 || !r.has("a") {
			t.Fatalf("%v after the restore, inside the grace: events %v, registered %v", time.Since(restored), evs, r.has("a"))
		}
		time.Sleep(100*time.Millisecond + time.Millisecond)
		synctest.Wait()
		if r.has("a") {
			t.Fatalf("still registered %v after the restore; want removal once the grace ends", time.Since(restored))
		}
	})
}

func TestGrantGraceIsIgnoredWhenNotRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, err := New(Config{}, r, r)
		if err != nil {
			t.Fatal(err)
		}
		c.GrantGrace()
		if at := c.takeGrace(); !at.IsZero() {
			t.Errorf("a checker that is not running kept a grace request from %v", at)
		}
	})
}

func TestABeatWaitingOnTheLeaderHoldsDeadlinesUntilItIsApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		var waitingSince atomic.Int64 // unix ns of the beat the leader holds; 0: none
		backlog := func() time.Duration {
			if ns := waitingSince.Load(); ns != 0 {
				return time.Since(time.Unix(0, ns))
			}
			return 0
		}
		_, stop := r.start(Config{Backlog: backlog})
		defer stop()
		time.Sleep(10 * time.Second) // past the failover fence
		r.register("live", "dead")
		registered := time.Now()

		// live's beat reaches the leader 2s later and waits 6s to commit
		// (an overloaded leader): past suspect_after (3s) and TTL (5s).
		time.Sleep(2 * time.Second)
		waitingSince.Store(time.Now().UnixNano())
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if got := r.events(fsm.EventSuspect, fsm.EventExpired); len(got) != 0 {
			t.Fatalf("%v after registering, with a beat waiting on the leader since 2s: %v; want no verdict judged past the beat's arrival",
				time.Since(registered), got)
		}
		r.beat("live")
		waitingSince.Store(0)

		// The backlog gone, the instance that never beat is due at once.
		time.Sleep(100*time.Millisecond + time.Millisecond)
		synctest.Wait()
		if r.has("dead") || !r.has("live") {
			t.Errorf("one sweep after the backlog cleared: dead registered %v, live registered %v; want false, true", r.has("dead"), r.has("live"))
		}
		if got := r.events(fsm.EventSuspect, fsm.EventExpired); !slices.Equal(got, []string{"EXPIRED dead"}) {
			t.Errorf("events = %v, want [EXPIRED dead]", got)
		}
	})
}
