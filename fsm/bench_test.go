package fsm_test

import (
	"fmt"
	"io"
	"testing"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// benchFSM returns an FSM holding n instances over 100 services, at index n.
func benchFSM(b *testing.B, n int) *fsm.FSM {
	b.Helper()
	f := fsm.New(fsm.Config{})
	for i := range n {
		data, err := fsm.Encode(fsm.RegisterType, &fsmpb.Register{
			Service: fmt.Sprintf("svc-%d", i%100), Id: fmt.Sprintf("inst-%d", i), Address: "10.0.0.1:8080",
			Metadata: map[string]string{"zone": "a", "version": "1"}, Incarnation: 1,
			BeatIntervalNs: 1e9, SuspectAfterNs: 2.5e9, TtlNs: 5e9, NowUnixNs: 1,
		})
		if err != nil {
			b.Fatal(err)
		}
		f.Apply(fsmtest.Log(uint64(i+1), data))
	}
	return f
}

func beatBatch(n int) *fsmpb.BeatBatch {
	bb := &fsmpb.BeatBatch{NowUnixNs: 2}
	for i := range n {
		bb.Beats = append(bb.Beats, &fsmpb.Beat{Service: fmt.Sprintf("svc-%d", i%100), Id: fmt.Sprintf("inst-%d", i), Incarnation: 1})
	}
	return bb
}

// BenchmarkApplyBeatBatch applies one BeatBatch of 10,000 beats (the
// largest a batch holds) to an FSM of 100,000 instances.
func BenchmarkApplyBeatBatch(b *testing.B) {
	f := benchFSM(b, 100_000)
	data, err := fsm.Encode(fsm.BeatBatchType, beatBatch(10_000))
	if err != nil {
		b.Fatal(err)
	}
	index := uint64(100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		index++
		if res, ok := f.Apply(fsmtest.Log(index, data)).(*fsm.BeatResult); !ok || len(res.Rejected) != 0 {
			b.Fatalf("apply: %v", res)
		}
	}
	b.ReportMetric(float64(b.N*10_000)/b.Elapsed().Seconds(), "beats/s")
}

// BenchmarkEncodeBeatBatch and BenchmarkDecodeBeatBatch: 10,000 beats.
func BenchmarkEncodeBeatBatch(b *testing.B) {
	bb := beatBatch(10_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Encode(fsm.BeatBatchType, bb); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBeatBatch(b *testing.B) {
	data, err := fsm.Encode(fsm.BeatBatchType, beatBatch(10_000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := fsm.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot100k takes and persists a snapshot of 100,000 instances.
func BenchmarkSnapshot100k(b *testing.B) {
	benchPersist(b, benchFSM(b, 100_000))
}

// benchPersist takes a snapshot of f and persists it to a sink that
// discards it, once per iteration.
func benchPersist(b *testing.B, f *fsm.FSM) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		sink := &discardSink{}
		if err := snap.Persist(sink); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		b.SetBytes(sink.n)
	}
}

type discardSink struct{ n int64 }

func (s *discardSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *discardSink) Close() error                { return nil }
func (s *discardSink) ID() string                  { return "discard" }
func (s *discardSink) Cancel() error               { return nil }

var _ io.Writer = (*discardSink)(nil)

// BenchmarkScanInstances100k is the read side of one expiry sweep: the
// leader's checker visits every instance of 100,000 (ten times a second by
// default) through FSM.ScanInstances.
func BenchmarkScanInstances100k(b *testing.B) {
	f := benchFSM(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n, beats := 0, uint64(0)
		f.ScanInstances(func(in *fsm.Instance) {
			n++
			beats += in.LastBeatIndex
		})
		if n != 100_000 || beats == 0 {
			b.Fatalf("scanned %d instances (beat index sum %d), want 100,000", n, beats)
		}
	}
}

// BenchmarkApplyBeatBatchAfterSnapshot is BenchmarkApplyBeatBatch with a
// Snapshot before every batch (not timed): copy on write at its worst,
// every chunk the batch touches (the 79 of 128 instances that hold the
// 10,000 beaten ones) is copied before its first write.
func BenchmarkApplyBeatBatchAfterSnapshot(b *testing.B) {
	f := benchFSM(b, 100_000)
	data, err := fsm.Encode(fsm.BeatBatchType, beatBatch(10_000))
	if err != nil {
		b.Fatal(err)
	}
	index := uint64(100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		index++
		if res, ok := f.Apply(fsmtest.Log(index, data)).(*fsm.BeatResult); !ok || len(res.Rejected) != 0 {
			b.Fatalf("apply: %v", res)
		}
		b.StopTimer()
		snap.Release()
		b.StartTimer()
	}
}
