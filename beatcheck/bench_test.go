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
	b.Helper()
	f := fsm.New(fsm.Config{HistorySize: 1})
	index := uint64(0)
	for start := 0; start < n; start += 1000 {
		wb := &fsmpb.WriteBatch{}
		for i := start; i < min(n, start+1000); i++ {
			last := benchNow.Add(-time.Second)
			if i%100 == 0 {
				last = benchNow.Add(-10 * time.Second)
			}
			wb.Writes = append(wb.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: &fsmpb.Register{
				Service: fmt.Sprintf("payments-api-%04d", i%1000), Id: fmt.Sprintf("instance-%030d", i),
				Address: "127.0.0.1:8080", Incarnation: 1, BeatIntervalNs: int64(time.Second),
				SuspectAfterNs: int64(2500 * time.Millisecond), TtlNs: int64(5 * time.Second), NowUnixNs: last.UnixNano(),
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
