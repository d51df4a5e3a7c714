package beatcheck

import (
	"fmt"
	"testing"
	"time"

	"github.com/regcenter/registry/fsm"
)

// BenchmarkClassify100k is the work of one sweep over 100,000 instances of
// which 1 % are due: classify every instance.
func BenchmarkClassify100k(b *testing.B) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
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
		for i := range ins {
			if classify(&ins[i], now, f.fence(&ins[i], 2*time.Second)) != keep {
				due++
			}
		}
		if due != 1000 {
			b.Fatalf("%d due, want 1000", due)
		}
	}
}
