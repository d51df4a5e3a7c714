package beatcheck

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// The node hands the checker its *fsm.FSM: its sweeps scan the due chunks.
var _ DueState = (*fsm.FSM)(nil)

// fullScan hides the fsm's ScanDue: a sweep of it scans every instance,
// as every sweep did before ScanDue.
type fullScan struct{ f *fsm.FSM }

func (s fullScan) ScanInstances(fn func(*fsm.Instance)) { s.f.ScanInstances(fn) }

// conds returns the conditions of ds as strings, in order.
func conds(ds []*fsmpb.Condition) []string {
	out := make([]string, len(ds))
	for i, c := range ds {
		out[i] = fmt.Sprintf("%s/%s@%d#%d", c.GetService(), c.GetId(), c.GetIncarnation(), c.GetLastBeatIndex())
	}
	return out
}

// TestSweepOfDueChunksDecidesAsAFullScan: on a random state (instances
// beaten recently, long ago, from a clock that went backwards, SUSPECT
// ones, some with a TTL shorter than suspect_after), with random fences
// and a guard that engages at some sweeps, a sweep that scans only the
// due chunks (fsm.FSM.ScanDue) finds the same silent and live counts
// and proposes the same SUSPECT marks and expiries, in the same order
// from the same random source, with the same guard figures, as a sweep
// that scans every instance.
func TestSweepOfDueChunksDecidesAsAFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 16))
	f := fsm.New(fsm.Config{HistorySize: 16})
	index := uint64(0)
	clock := time.Unix(100_000, 0)
	// Most writes carry the present, a few a past up to an hour back.
	when := func() int64 {
		if rng.IntN(200) == 0 {
			return clock.Add(-time.Duration(rng.Int64N(int64(time.Hour)))).UnixNano()
		}
		return clock.Add(-time.Duration(rng.Int64N(int64(10 * time.Second)))).UnixNano()
	}
	const n = 3000
	id := func(i int) (string, string) { return fmt.Sprint("svc-", i%7), fmt.Sprintf("i-%05d", i) }
	wb := &fsmpb.WriteBatch{}
	for i := range n {
		svc, iid := id(i)
		suspectAfter := 15*time.Second + time.Duration(rng.Int64N(int64(10*time.Second)))
		ttl := 2 * suspectAfter
		if rng.IntN(50) == 0 {
			ttl = suspectAfter / 2
		}
		wb.Writes = append(wb.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: &fsmpb.Register{
			Service: svc, Id: iid, Address: "127.0.0.1:1", Incarnation: 1, BeatIntervalNs: int64(5 * time.Second),
			SuspectAfterNs: int64(suspectAfter), TtlNs: int64(ttl), NowUnixNs: when(),
		}}})
	}
	index++
	fsmtest.Apply(t, f, index, wb)

	cfg := DefaultConfig()
	cfg.GuardMinCount = 20
	compared, guarded, silentSeen := 0, 0, 0
	for round := range 300 {
		clock = clock.Add(time.Duration(rng.Int64N(int64(time.Second))))
		// Beats for a random tenth of the instances.
		bb := &fsmpb.BeatBatch{NowUnixNs: when()}
		for range n / 10 {
			svc, iid := id(rng.IntN(n))
			bb.Beats = append(bb.Beats, &fsmpb.Beat{Service: svc, Id: iid, Incarnation: 1})
		}
		index++
		fsmtest.Apply(t, f, index, bb)
		if rng.IntN(3) == 0 { // a beat from a clock up to an hour behind
			svc, iid := id(rng.IntN(n))
			index++
			fsmtest.Apply(t, f, index, &fsmpb.BeatBatch{
				NowUnixNs: clock.Add(-time.Duration(rng.Int64N(int64(time.Hour)))).UnixNano(),
				Beats:     []*fsmpb.Beat{{Service: svc, Id: iid, Incarnation: 1}},
			})
		}
		if round%10 == 0 { // some instances go SUSPECT
			ms := &fsmpb.MarkSuspect{NowUnixNs: clock.UnixNano()}
			for range 20 {
				svc, iid := id(rng.IntN(n))
				if in, ok := f.Instance(svc, iid); ok {
					ms.Entries = append(ms.Entries, &fsmpb.Condition{Service: svc, Id: iid, Incarnation: 1, LastBeatIndex: in.LastBeatIndex})
				}
			}
			index++
			fsmtest.Apply(t, f, index, ms)
		}
		fc := fences{graceFrom: clock.Add(-time.Duration(rng.Int64N(int64(2 * time.Minute))))}
		if rng.IntN(5) == 0 {
			fc.stallUntil = clock.Add(time.Duration(rng.Int64N(int64(20*time.Second))) - 10*time.Second)
		}
		for _, now := range []time.Time{clock, clock.Add(20 * time.Second), clock.Add(-time.Minute)} {
			sc := fc.clock(now, cfg.FailoverGrace)
			want, got := find(fullScan{f}, sc), find(f, sc)
			if got.silent != want.silent || got.live != want.live {
				t.Fatalf("round %d: ScanDue sweep found silent %d live %d, full scan silent %d live %d",
					round, got.silent, got.live, want.silent, want.live)
			}
			expiredInWindow := rng.IntN(30)
			seed := rng.Uint64()
			pw := makePlan(want.toSuspect, want.toExpire, want.silent, want.live, expiredInWindow, false, &cfg, rand.New(rand.NewPCG(seed, 1)))
			pg := makePlan(got.toSuspect, got.toExpire, got.silent, got.live, expiredInWindow, false, &cfg, rand.New(rand.NewPCG(seed, 1)))
			if pg.guard != pw.guard || pg.held != pw.held ||
				!slices.Equal(conds(pg.suspect), conds(pw.suspect)) || !slices.Equal(conds(pg.expire), conds(pw.expire)) {
				t.Fatalf("round %d: ScanDue sweep plans guard %v held %d suspect %v expire %v;\\nfull scan guard %v held %d suspect %v expire %v",
					round, pg.guard, pg.held, conds(pg.suspect), conds(pg.expire), pw.guard, pw.held, conds(pw.suspect), conds(pw.expire))
			}
			compared++
			silentSeen += want.silent
			if pw.guard {
				guarded++
			}
		}
	}
	if guarded == 0 || guarded == compared || silentSeen == 0 {
		t.Fatalf("the state never exercised both guard states: %d of %d sweeps guarded, %d silent in all", guarded, compared, silentSeen)
	}
}
