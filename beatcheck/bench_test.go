package beatcheck

import (
	"fmt"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

var benchNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// BenchmarkClassify100k is the work of one sweep over 100,000 instances of
// which 1 % are due: classify every instance.
func BenchmarkClassify100k(b *testing.B) {
	now := benchNow
	ins := make([]fsm.Instance, 100_000)
	for i := range ins {
		last := now.Add(-time.Second)
		if i%100 == 0 {
			last = now.Add(-10 * time.Second)
		}
		ins[i] = fsm.Instance{Service: fmt.Sprintf("svc-%d", i%100), ID: fmt.Sprint(i), Incarnation: 1,
			BeatInterval: time.Second, SuspectAfter: 2500 * time.Millisecond, TTL: 5 * time.Second,
			State: fsm.StateHealthy, LastBeatAt: last.UnixNano()}
	}
	f := fences{graceFrom: now.Add(-time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		due := 0
		clock := f.clock(now, 2*time.Second)
		for i := range ins {
			if clock.classify(&ins[i]) != keep {
				due++
			}
		}
		if due != 1000 {
			b.Fatalf("%d due, want 1000", due)
		}
	}
}

// sweepFSM returns an FSM of n instances over 1,000 services, 1 % of them
// silent for 10 s at benchNow, the others beaten 1 s before it.
func sweepFSM(b *testing.B, n int) *fsm.FSM {
	return buildFSM(b, n, time.Second, 2500*time.Millisecond, 5*time.Second, func(i int) time.Time {
		if i%100 == 0 {
			return benchNow.Add(-10 * time.Second)
		}
		return benchNow.Add(-time.Second)
	})
}

// buildFSM returns an FSM of n instances over 1,000 services with the given
// beat interval, suspect_after and ttl; instance i last beat at lastBeat(i).
func buildFSM(b *testing.B, n int, interval, suspectAfter, ttl time.Duration, lastBeat func(i int) time.Time) *fsm.FSM {
	b.Helper()
	f := fsm.New(fsm.Config{HistorySize: 1})
	index := uint64(0)
	for start := 0; start < n; start += 1000 {
		wb := &fsmpb.WriteBatch{}
		for i := start; i < min(n, start+1000); i++ {
			wb.Writes = append(wb.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: &fsmpb.Register{
				Service: fmt.Sprintf("payments-api-%04d", i%1000), Id: fmt.Sprintf("instance-%030d", i),
				Address: "127.0.0.1:8080", Incarnation: 1, BeatIntervalNs: int64(interval),
				SuspectAfterNs: int64(suspectAfter), TtlNs: int64(ttl), NowUnixNs: lastBeat(i).UnixNano(),
			}}})
		}
		data, err := fsm.Encode(fsm.WriteBatchType, wb)
		if err != nil {
			b.Fatal(err)
		}
		index++
		f.Apply(fsmtest.Log(index, data))
	}
	return f
}

// BenchmarkSweepScan is the scan of one leader sweep as the checker runs
// it: FSM.ScanInstances over N instances, classifying each (1 % due).
// It reports ns/instance; the checker runs it ten times a second.
func BenchmarkSweepScan(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("-short: the million-instance case builds its state for about a minute")
			}
			f := sweepFSM(b, n)
			fc := fences{graceFrom: benchNow.Add(-time.Hour)}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				due := 0
				clock := fc.clock(benchNow, 2*time.Second)
				f.ScanInstances(func(in *fsm.Instance) {
					if clock.classify(in) != keep {
						due++
					}
				})
				if due != n/100 {
					b.Fatalf("%d due, want %d", due, n/100)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/instance")
		})
	}
}

// steadyFSM returns an FSM of n instances over 1,000 services beating
// every 10 s with suspect_after 20 s and ttl 30 s, their phases spread
// evenly over the 10 s before benchNow: instance i last beat at
// benchNow - 10 s + (i % 100) × 100 ms.
func steadyFSM(b *testing.B, n int) *fsm.FSM {
	return buildFSM(b, n, 10*time.Second, 20*time.Second, 30*time.Second, func(i int) time.Time {
		return benchNow.Add(-10*time.Second + time.Duration(i%100)*100*time.Millisecond)
	})
}

// BenchmarkSweepDue is the leader's sweeps over N instances that all beat
// in time (every 10 s, suspect_after 20 s): one iteration is 10 s of the
// checker, 100 sweeps 100 ms apart, each after the beats of its 100 ms
// (1 % of the instances, applied with the timer stopped). scan=full scans
// every instance each sweep (the checker before ScanDue), scan=due only
// the chunks holding a due instance, as the checker now does. It reports
// ns/instance/sweep and the instances visited per sweep; none is due.
func BenchmarkSweepDue(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		if n > 100_000 && testing.Short() {
			b.Logf("-short: skipping n=%d, which builds its state for about a minute", n)
			continue
		}
		var f *fsm.FSM
		now, sweeps := benchNow, 0
		for _, mode := range []string{"full", "due"} {
			b.Run(fmt.Sprintf("n=%d/scan=%s", n, mode), func(b *testing.B) {
				if f == nil {
					f = steadyFSM(b, n)
				}
				fc := fences{graceFrom: benchNow.Add(-time.Hour)}
				visited := 0
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					for range 100 {
						b.StopTimer()
						now = now.Add(100 * time.Millisecond)
						sweeps++
						// The instances of this 100 ms phase beat.
						bb := &fsmpb.BeatBatch{NowUnixNs: now.UnixNano()}
						for i := sweeps % 100; i < n; i += 100 {
							bb.Beats = append(bb.Beats, &fsmpb.Beat{Service: fmt.Sprintf("payments-api-%04d", i%1000),
								Id: fmt.Sprintf("instance-%030d", i), Incarnation: 1})
						}
						data, err := fsm.Encode(fsm.BeatBatchType, bb)
						if err != nil {
							b.Fatal(err)
						}
						if res, ok := f.Apply(fsmtest.Log(uint64(1_000_000+sweeps), data)).(*fsm.BeatResult); !ok || len(res.Rejected) > 0 {
							b.Fatalf("beats not applied: %v", res)
						}
						b.StartTimer()
						due := 0
						clock := fc.clock(now, 2*time.Second)
						visit := func(in *fsm.Instance) {
							visited++
							if clock.classify(in) != keep {
								due++
							}
						}
						if mode == "full" {
							f.ScanInstances(visit)
						} else {
							f.ScanDue(clock.now, visit)
						}
						if due != 0 {
							b.Fatalf("%d due, want 0", due)
						}
					}
				}
				sw := float64(b.N * 100)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(sw*float64(n)), "ns/instance/sweep")
				b.ReportMetric(float64(visited)/sw, "visited/sweep")
			})
		}
	}
}
