package fsm_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// isDue reports whether the expiry checker may act on in at now.
func isDue(in *fsm.Instance, now int64) bool {
	return in.LastBeatAt+int64(min(in.SuspectAfter, in.TTL)) <= now
}

// dueSet returns "service/id@incarnation" of the instances scan visits
// that are due at now, sorted.
func dueSet(scan func(fn func(*fsm.Instance)), now int64) []string {
	var out []string
	scan(func(in *fsm.Instance) {
		if isDue(in, now) {
			out = append(out, fmt.Sprintf("%s/%s@%d", in.Service, in.ID, in.Incarnation))
		}
	})
	slices.Sort(out)
	return out
}

// summaries is ListServices without its index.
func summaries(f *fsm.FSM) []fsm.ServiceSummary {
	out, _ := f.ListServices()
	return out
}

// recount is what ListServices should say, counted from every instance.
func recount(f *fsm.FSM) []fsm.ServiceSummary {
	by := map[string]*fsm.ServiceSummary{}
	ins, _ := f.Instances()
	for _, in := range ins {
		if by[in.Service] == nil {
			by[in.Service] = &fsm.ServiceSummary{Service: in.Service}
		}
		if in.State == fsm.StateSuspect {
			by[in.Service].Suspect++
		} else {
			by[in.Service].Healthy++
		}
	}
	var out []fsm.ServiceSummary
	for _, svc := range slices.Sorted(maps.Keys(by)) {
		out = append(out, *by[svc])
	}
	return out
}

// TestScanDueFindsEveryDueInstance is a model test: after every step of a
// random sequence of registrations, beats (with the clock going backwards
// too, as under a new leader), SUSPECT marks, deregistrations (which move
// instances between chunks), snapshots (which freeze the chunks) and
// restores, ScanDue at several times finds exactly the due instances a
// full scan finds, and ListServices counts what a recount does. The scans between steps make the chunks' bounds exact,
// so a write that did not lower its chunk's bound is caught.
func TestScanDueFindsEveryDueInstance(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 16))
			f := fsm.New(fsm.Config{HistorySize: 16})
			index := uint64(0)
			clock := int64(1_000 * time.Second)
			// Most writes carry the present (within 5 s), one in 150 a clock
			// half an hour behind: the scans at clock - 1000 s below then
			// skip most chunks, and must find the instances that went due
			// backwards.
			when := func() int64 {
				if rng.IntN(150) == 0 {
					return clock - int64(2000*time.Second) + rng.Int64N(int64(60*time.Second))
				}
				return clock + rng.Int64N(int64(10*time.Second)) - int64(5*time.Second)
			}
			id := func() (string, string) { n := rng.IntN(700); return fmt.Sprint("svc-", n%5), fmt.Sprintf("i-%04d", n) }
			for step := range 1500 {
				clock += rng.Int64N(int64(200 * time.Millisecond))
				switch op := rng.IntN(100); {
				case op < 40:
					svc, iid := id()
					index++
					fsmtest.Apply(t, f, index, &fsmpb.Register{
						Service: svc, Id: iid, Address: "127.0.0.1:1", Incarnation: uint64(1 + rng.IntN(3)),
						BeatIntervalNs: int64(time.Second), SuspectAfterNs: int64(10*time.Second) + rng.Int64N(int64(20*time.Second)),
						// Some with a TTL shorter than suspect_after,
						// which the API refuses but the state holds.
						TtlNs: int64(5*time.Second) + rng.Int64N(int64(100*time.Second)), NowUnixNs: when(),
					})
				case op < 75:
					b := &fsmpb.BeatBatch{NowUnixNs: when()}
					for range 1 + rng.IntN(20) {
						svc, iid := id()
						inc := uint64(1)
						if in, ok := f.Instance(svc, iid); ok {
							inc = in.Incarnation
						}
						b.Beats = append(b.Beats, &fsmpb.Beat{Service: svc, Id: iid, Incarnation: inc})
					}
					index++
					fsmtest.Apply(t, f, index, b)
				case op < 82:
					svc, iid := id()
					in, ok := f.Instance(svc, iid)
					if !ok {
						continue
					}
					index++
					fsmtest.Apply(t, f, index, &fsmpb.MarkSuspect{NowUnixNs: clock, Entries: []*fsmpb.Condition{{
						Service: svc, Id: iid, Incarnation: in.Incarnation, LastBeatIndex: in.LastBeatIndex}}})
				case op < 95:
					svc, iid := id()
					index++
					fsmtest.Apply(t, f, index, &fsmpb.Deregister{Service: svc, Id: iid, NowUnixNs: clock})
				case op < 98:
					snap, err := f.Snapshot() // freezes the chunks: later writes copy them
					if err != nil {
						t.Fatal(err)
					}
					snap.Release()
				default:
					f = fsmtest.SnapshotRestore(t, f)
					index = f.AppliedIndex()
				}
				// The per-service counts Services keeps match a recount.
				if got, want := summaries(f), recount(f); !slices.Equal(got, want) {
					t.Fatalf("step %d: ListServices = %v, a recount of the instances %v", step, got, want)
				}
				for _, now := range []int64{clock - int64(1000*time.Second), clock - int64(30*time.Second), clock, clock + int64(15*time.Second), when()} {
					want := dueSet(f.ScanInstances, now)
					got := dueSet(func(fn func(*fsm.Instance)) { f.ScanDue(now, fn) }, now)
					if !slices.Equal(got, want) {
						t.Fatalf("step %d, now %d: ScanDue found %d due instances, a full scan %d:\n got %v\nwant %v",
							step, now, len(got), len(want), got, want)
					}
				}
			}
		})
	}
}

// TestScanDueSkipsChunksNotDue: ScanDue reads no chunk in which no
// instance is due, and every instance of a chunk in which one is.
func TestScanDueSkipsChunksNotDue(t *testing.T) {
	f := fsm.New(fsm.Config{HistorySize: 16})
	start := int64(1_000 * time.Second)
	for i := range 1000 { // 7 full chunks of 128 and one of 104
		fsmtest.Apply(t, f, uint64(i+1), &fsmpb.Register{
			Service: "s", Id: fmt.Sprintf("i-%04d", i), Address: "127.0.0.1:1", Incarnation: 1,
			BeatIntervalNs: int64(10 * time.Second), SuspectAfterNs: int64(20 * time.Second),
			TtlNs: int64(30 * time.Second), NowUnixNs: start,
		})
	}
	visits := func(now int64) int {
		n := 0
		f.ScanDue(now, func(*fsm.Instance) { n++ })
		return n
	}
	if n := visits(start + int64(10*time.Second)); n != 0 {
		t.Fatalf("10 s after registering with suspect_after 20 s: ScanDue visited %d instances, want 0", n)
	}
	if n := visits(start + int64(20*time.Second)); n != 1000 {
		t.Fatalf("20 s after: ScanDue visited %d instances, want all 1000", n)
	}
	// A re-registration from a clock 100 s behind makes its instance due
	// (a beat would not: it never moves LastBeatAt back): its chunk (the
	// first: instance 0 was stored first) is read, and only it.
	fsmtest.Apply(t, f, 1001, &fsmpb.Register{
		Service: "s", Id: "i-0000", Address: "127.0.0.1:1", Incarnation: 1,
		BeatIntervalNs: int64(10 * time.Second), SuspectAfterNs: int64(20 * time.Second),
		TtlNs: int64(30 * time.Second), NowUnixNs: start - int64(100*time.Second),
	})
	for range 2 {
		if n := visits(start + int64(10*time.Second)); n != 128 {
			t.Fatalf("after a registration from the past: ScanDue visited %d instances, want one chunk of 128", n)
		}
	}
	if got := f.InstanceCount(); got != 1000 {
		t.Fatalf("InstanceCount() = %d, want 1000", got)
	}
}

// TestScanDueConcurrentWithApply: two ScanDue scans run at once (each
// stores the chunks' bounds under the read lock) while Apply re-registers
// instances from a clock an hour behind, which makes them due: every
// instance due from the start (one in a hundred, which no beat touches)
// is visited by every scan. Run with -race.
func TestScanDueConcurrentWithApply(t *testing.T) {
	const n = 20_000 // several lock groups of chunks
	f := fsm.New(fsm.Config{HistorySize: 16})
	wb := &fsmpb.WriteBatch{}
	for i := range n {
		last := int64(0)
		if i%100 == 0 {
			last = -int64(time.Minute)
		}
		wb.Writes = append(wb.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: &fsmpb.Register{
			Service: "s", Id: fmt.Sprint(i), Address: "127.0.0.1:1", Incarnation: 1,
			SuspectAfterNs: int64(20 * time.Second), TtlNs: int64(30 * time.Second), NowUnixNs: last,
		}}})
	}
	fsmtest.Apply(t, f, 1, wb)
	done := make(chan struct{})
	var applier sync.WaitGroup
	applier.Go(func() {
		for index := uint64(2); ; index++ {
			select {
			case <-done:
				return
			default:
			}
			k := 1 + index%(n-1)
			if k%100 == 0 {
				continue // leave the instances due from the start alone
			}
			fsmtest.Apply(t, f, index, &fsmpb.Register{
				Service: "s", Id: fmt.Sprint(k), Address: "127.0.0.1:1", Incarnation: 1,
				SuspectAfterNs: int64(20 * time.Second), TtlNs: int64(30 * time.Second), NowUnixNs: -int64(time.Hour),
			})
		}
	})
	errs := make(chan error, 2)
	var scanners sync.WaitGroup
	for range 2 {
		scanners.Go(func() {
			for range 20 {
				seen := 0
				f.ScanDue(0, func(in *fsm.Instance) {
					if in.LastBeatAt == -int64(time.Minute) {
						seen++
					}
				})
				if seen != n/100 {
					errs <- fmt.Errorf("ScanDue visited %d of the %d instances due from the start", seen, n/100)
					return
				}
			}
		})
	}
	scanners.Wait()
	close(done)
	applier.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
