package fsm_test

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// scaleRegister is the i-th registration of a realistic scale state: 1,000
// services named like "payments-api-0042" (17 characters), ids of 36
// characters like a UUID, a loopback address with a port, and three
// metadata pairs of which one varies by instance, as deployments label them.
func scaleRegister(i int) *fsmpb.Register {
	return &fsmpb.Register{
		Service:        fmt.Sprintf("payments-api-%04d", i%1000),
		Id:             fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i, i&0xffff, i&0xfff, (i>>12)&0xfff, i),
		Address:        fmt.Sprintf("127.0.0.1:%d", 1024+i%60000),
		Metadata:       map[string]string{"zone": fmt.Sprintf("zone-%d", i%3), "version": "1.4.2", "pod": fmt.Sprintf("pod-%d", i)},
		Incarnation:    1,
		BeatIntervalNs: int64(time.Second), SuspectAfterNs: int64(2500 * time.Millisecond), TtlNs: int64(5 * time.Second),
		NowUnixNs: 1,
	}
}

// scaleFSM returns an FSM holding n scale instances, registered by one
// WriteBatch of up to 1,000 registrations per log entry.
func scaleFSM(b *testing.B, n int) *fsm.FSM {
	b.Helper()
	f := fsm.New(fsm.Config{HistorySize: 1})
	index := uint64(0)
	for start := 0; start < n; start += 1000 {
		wb := &fsmpb.WriteBatch{}
		for i := start; i < min(n, start+1000); i++ {
			wb.Writes = append(wb.Writes, &fsmpb.Write{Op: &fsmpb.Write_Register{Register: scaleRegister(i)}})
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

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkStateMemory reports the heap an FSM holds per instance (the
// HeapAlloc delta after a GC, divided by N) for N realistic instances:
// the replicated state's cost on every node. The time per op is the time
// to build the state and means little.
func BenchmarkStateMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("-short: the million-instance case builds its state for about a minute")
			}
			var perInstance float64
			for b.Loop() {
				before := heapAlloc()
				f := scaleFSM(b, n)
				after := heapAlloc()
				perInstance = float64(after-before) / float64(n)
				runtime.KeepAlive(f)
			}
			b.ReportMetric(perInstance, "B/instance")
		})
	}
}

// BenchmarkSnapshotCall measures FSM.Snapshot alone, the part hashicorp/raft
// runs on the FSM goroutine (Apply waits for it), at N instances. Persist
// runs afterwards, concurrently with Apply, and is not timed.
func BenchmarkSnapshotCall(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("-short: the million-instance case builds its state for about a minute")
			}
			f := scaleFSM(b, n)
			index := uint64(1 << 40)
			data, err := fsm.Encode(fsm.BeatBatchType, &fsmpb.BeatBatch{NowUnixNs: 2,
				Beats: []*fsmpb.Beat{{Service: "payments-api-0000", Id: scaleRegister(0).GetId(), Incarnation: 1}}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// A write between snapshots, as in a live cluster.
				b.StopTimer()
				index++
				f.Apply(fsmtest.Log(index, data))
				b.StartTimer()
				snap, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				snap.Release()
				b.StartTimer()
			}
		})
	}
}

// scale1M is the million-instance scale FSM the snapshot benchmarks share,
// built once per test binary: building it takes about a minute, longer
// than the benchmarks themselves. They only read it.
var scale1M struct {
	once sync.Once
	f    *fsm.FSM
	snap []byte // its snapshot stream
}

func scaleFSM1M(b *testing.B) (*fsm.FSM, []byte) {
	b.Helper()
	if testing.Short() {
		b.Skip("-short: the million-instance state takes about a minute to build")
	}
	scale1M.once.Do(func() {
		f := scaleFSM(b, 1_000_000)
		var buf bytes.Buffer
		if _, err := f.WriteSnapshot(&buf); err != nil {
			b.Fatal(err)
		}
		scale1M.f, scale1M.snap = f, buf.Bytes()
	})
	if scale1M.f == nil {
		b.Fatal("building the million-instance FSM failed in an earlier benchmark")
	}
	return scale1M.f, scale1M.snap
}

// BenchmarkSnapshotPersist1M takes a snapshot of a million scale instances
// and persists it to a sink that discards it: the CPU every node spends on
// each of its snapshots.
func BenchmarkSnapshotPersist1M(b *testing.B) {
	f, _ := scaleFSM1M(b)
	benchPersist(b, f)
}

// BenchmarkSnapshotRestore1M restores the snapshot stream of a million
// scale instances into a new FSM: what a node joining by snapshot, or
// restarting, spends before it serves.
func BenchmarkSnapshotRestore1M(b *testing.B) {
	f, data := scaleFSM1M(b)
	want := f.InstanceCount()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		g := fsm.New(fsm.Config{HistorySize: 1})
		if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			b.Fatal(err)
		}
		if got := g.InstanceCount(); got != want {
			b.Fatalf("restored %d instances, want %d", got, want)
		}
	}
}
