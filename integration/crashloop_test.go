package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// crashesPerRound is the crash loop's iterations per workload: 20 in the
// short form; a soak runs rounds until its share is used (200 or more
// iterations in a 30-minute soak). Each round checks its own history on its
// own services, so that porcupine's search stays bounded.
const crashesPerRound = 20

// Every node SIGKILLed within 100 ms and all restarted, over and over,
// while 4 clients register, deregister and read LINEARIZABLE through every
// node: no acknowledged registration is lost, no linearizable read is
// stale, the history is linearizable, and the replicas end byte-identical.
func TestCrashLoopLosesNothing(t *testing.T) {
	t.Parallel()
	report := startScenario(t)
	c := harness.Start(t, harness.Options{})
	waitLeader(t, c)
	var spread time.Duration
	scenario := reportRow{Scenario: "crash loop (all nodes killed within 100 ms)", FalseExpirations: notApplicable}
	sum := reportRounds(t, report, scenario, 1, 0.3, func(round int) reportRow {
		w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: fmt.Sprintf("crash%d", round), Services: 6, IDs: 3})
		var crashes []time.Duration
		for i := range crashesPerRound {
			// Let the clients get writes acknowledged by the new cluster
			// before it dies again.
			acked := w.hist.Count().AckedWrites
			poll.Eventually(t, leaderTimeout+replicationTimeout, func(context.Context) error {
				if got := w.hist.Count().AckedWrites; got < acked+5 {
					return fmt.Errorf("crash %d: %d writes acknowledged since the restart, want 5", i, got-acked)
				}
				return nil
			})
			crashes = append(crashes, w.hist.Now())
			d, err := c.KillAllAtOnce()
			if err != nil {
				t.Fatal(err)
			}
			spread = max(spread, d)
			if err := c.RestartAll(); err != nil {
				t.Fatal(err)
			}
		}
		final := w.finish(t, c)
		row := w.verdict(t, "crash loop", final)
		row.Faults = len(crashes)
		row.failovers = w.hist.Recovery(crashes)
		sameHashEverywhere(t, c)
		return row
	})
	if spread > 100*time.Millisecond {
		t.Errorf("the kills of one crash were %v apart, want within 100 ms", spread)
	}
	t.Logf("%d crashes; the widest spread of one crash's three SIGKILLs was %v", sum.Faults, spread)
}
