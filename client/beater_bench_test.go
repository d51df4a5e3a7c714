package client

import (
	"container/heap"
	"fmt"
	"log/slog"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
	"google.golang.org/protobuf/types/known/durationpb"
)

// BenchmarkBeaterSchedule is the beater's own work for a client keeping n
// registrations beating once a second, with no network: each op is one
// coalesce window (20ms) of the send loop, which collects the beats due
// into frames and looks for lost registrations; the frames are answered
// at once. ns/beat is what one beat costs the client apart from gRPC.
func BenchmarkBeaterSchedule(b *testing.B) {
	for _, n := range []int{12_500, 125_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := &Client{cfg: Config{MaxBeatsPerFrame: validate.MaxBeatBatch, CallTimeout: time.Hour}, log: slog.New(slog.DiscardHandler)}
			bt := newBeater(c)
			t0 := time.Unix(1_000_000, 0)
			for i := range n {
				r := &Registration{c: c, spec: &registryv1.Instance{Service: "bench", Id: fmt.Sprint(i), Incarnation: 1}}
				st := &beatState{reg: r, incarnation: 1, own: time.Second, interval: time.Second,
					suspectAfter: time.Hour, ttl: 3 * time.Hour, lastAck: t0,
					next: t0.Add(time.Duration(i) * time.Second / time.Duration(n))}
				bt.states[r] = st
				heap.Push(&bt.due, st)
			}
			now, beats := t0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				now = now.Add(coalesce)
				frames, _, _ := bt.collect(now)
				bt.checkLost(now)
				for _, f := range frames {
					beats += len(f.Beats)
				}
				clear(bt.inflight)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(1, beats)), "ns/beat")
		})
	}
}

// BenchmarkBeaterRegistering is the beater's work while a client holding
// n registrations registers more: each op adds one registration and runs
// the send loop once, as the wake-up that add causes does.
func BenchmarkBeaterRegistering(b *testing.B) {
	for _, n := range []int{12_500, 125_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := &Client{cfg: Config{MaxBeatsPerFrame: validate.MaxBeatBatch, CallTimeout: time.Hour}, log: slog.New(slog.DiscardHandler)}
			bt := newBeater(c)
			spec := func(i int) *registryv1.Instance {
				return &registryv1.Instance{Service: "bench", Id: fmt.Sprint(i), Incarnation: 1,
					BeatInterval: durationpb.New(time.Hour), SuspectAfter: durationpb.New(2 * time.Hour), Ttl: durationpb.New(3 * time.Hour)}
			}
			for i := range n {
				bt.add(&Registration{c: c, spec: spec(i)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := n
			for b.Loop() {
				bt.add(&Registration{c: c, spec: spec(i)})
				i++
				now := time.Now()
				bt.collect(now)
				bt.checkLost(now)
			}
		})
	}
}
