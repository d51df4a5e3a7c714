package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// An old leader cut off from both peers while clients keep writing and
// reading LINEARIZABLE through every node: the majority elects a new leader,
// no read returns the old leader's stale state, and no write is
// acknowledged by the isolated node while it is cut off; after the heal
// the history is linearizable and no acknowledged write is lost.
func TestIsolatedOldLeaderServesNoStaleReads(t *testing.T) {
	t.Parallel()
	report := startScenario(t)
	c := harness.Start(t, harness.Options{FaultInjection: true})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	const phase = 3 * time.Second
	reportRounds(t, report, reportRow{Scenario: "isolated old leader", FalseExpirations: notApplicable}, 1, 0.05,
		func(i int) reportRow { return isolateOldLeader(t, c, i, phase) })
}

// isolateOldLeader is one round of TestIsolatedOldLeaderServesNoStaleReads
// with a fresh workload.
func isolateOldLeader(t *testing.T, c *harness.Cluster, round int, phase time.Duration) reportRow {
	old := waitLeader(t, c)
	w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: fmt.Sprintf("iso%d", round)})
	passTime(t, phase/2)

	if err := c.Isolate(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	// From here every Raft RPC the old leader sends is refused: a write
	// called from now on cannot reach a quorum through it. (One called
	// while the faults were being installed could, and did once.)
	isolatedAt := w.hist.Now()
	var majority []*harness.Node
	for _, n := range c.Nodes() {
		if n != old {
			majority = append(majority, n)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
	newLeader, err := c.WaitLeaderAmong(ctx, majority...)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s isolated; %s leads the majority", old, newLeader)
	// Negative control: STALE reads of the isolated node, which may miss
	// the majority's writes; the checker must catch them.
	control := w.hist.Fork()
	controlCtx, stopControl := context.WithCancel(t.Context())
	controlDone := make(chan struct{})
	go func() {
		defer close(controlDone)
		for i := 0; controlCtx.Err() == nil; i++ {
			svc := w.services[i%len(w.services)]
			p := control.Call(1000, old.ID(), check.Input{Kind: check.Get, Service: svc})
			resp, err := getService(controlCtx, old, svc, registryv1.Consistency_CONSISTENCY_STALE)
			if err != nil {
				p.Return(check.Output{Outcome: check.Unknown, Err: err.Error()})
				continue
			}
			p.Return(check.Output{Outcome: check.OK, Instances: members(resp.GetInstances()), Index: resp.GetIndex()})
			waitUntil(controlCtx, time.Now().Add(50*time.Millisecond))
		}
	}()
	passTime(t, phase)
	stopControl()
	<-controlDone
	healedAt := w.hist.Now()
	if err := c.Heal(t.Context()); err != nil {
		t.Fatal(err)
	}
	passTime(t, phase/2)
	final := w.finish(t, c)

	// The isolated node cannot reach a quorum, nor learn the new leader to
	// forward to: whatever it acknowledged while cut off was not committed.
	var ackedByIsolated int
	for _, o := range w.hist.Ops() {
		if o.Node == old.ID() && o.Input.Kind != check.Get && o.Output.Outcome == check.OK &&
			o.Call > isolatedAt && o.Return < healedAt {
			ackedByIsolated++
			t.Errorf("write acknowledged by the isolated old leader %s: %+v", old, o)
		}
	}
	row := w.verdict(t, "isolated old leader", final)
	row.Faults = 1

	mixed := check.Merge(w.hist, control)
	controlStale := len(mixed.StaleReads())
	controlLinearizable := porcupine.CheckOperations(check.Model, mixed.Operations())
	if controlStale == 0 || controlLinearizable {
		t.Errorf("negative control: STALE reads of the isolated node: %d stale found, porcupine linearizable = %v; want stale reads caught",
			controlStale, controlLinearizable)
	}
	t.Logf("writes acknowledged by the isolated node: %d; the control's stale reads caught: %d of %d",
		ackedByIsolated, controlStale, len(control.Ops()))
	row.failovers = w.hist.Recovery([]time.Duration{isolatedAt})
	return row
}

// Mixed faults under load: every ~2 s a random node is killed, paused,
// isolated or restarted (the previous fault healed first) while 4 clients
// register, deregister and read LINEARIZABLE through every node. The
// history is linearizable and no acknowledged write is lost.
func TestMixedFaultsUnderLoadStayLinearizable(t *testing.T) {
	t.Parallel()
	runMixedFaults(t, mixedFaultsScenario{name: "mixed faults", soakShare: 0.2})
}

// The same with TLS on every port and ACLs on: the workload, the fault
// control calls and the harness's checks all go through mutual TLS with
// the management token. One round (a small share of a soak).
func TestMixedFaultsUnderLoadStayLinearizableWithTLSAndACLs(t *testing.T) {
	t.Parallel()
	runMixedFaults(t, mixedFaultsScenario{name: "mixed faults, TLS and ACLs", secure: true, soakShare: 0.05})
}

// mixedFaultsScenario is a variant of the mixed-faults scenario.
type mixedFaultsScenario struct {
	name      string
	secure    bool    // TLS and ACLs on
	soakShare float64 // of a soak's time
}

func runMixedFaults(t *testing.T, sc mixedFaultsScenario) {
	report := startScenario(t)
	c := harness.Start(t, harness.Options{FaultInjection: true, TLS: sc.secure, ACL: sc.secure})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("fault seed %d", seed)
	// A soak runs rounds of 12 s, each with a fresh workload on fresh
	// services, so that porcupine checks histories of bounded size.
	reportRounds(t, report, reportRow{Scenario: sc.name, FalseExpirations: notApplicable}, 1, sc.soakShare,
		func(i int) reportRow { return mixedFaults(t, c, rng, i) })
}

// mixedFaults is one round of TestMixedFaultsUnderLoadStayLinearizable.
func mixedFaults(t *testing.T, c *harness.Cluster, rng *rand.Rand, round int) reportRow {
	const (
		total = 12 * time.Second
		every = 2 * time.Second
	)
	w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: fmt.Sprintf("mixed%d", round)})
	// Every kind comes up once before any repeats.
	kindNames := []string{"kill", "pause", "isolate", "restart"}
	var order []int

	var (
		faults       int
		leaderFaults []time.Duration // when a fault took the leader away
		heal         func() error
		kinds        = map[string]int{}
	)
	healNow := func() {
		t.Helper()
		if heal == nil {
			return
		}
		if err := heal(); err != nil {
			t.Fatal(err)
		}
		heal = nil
	}
	end := time.Now().Add(total)
	for time.Now().Add(every).Before(end) {
		passTime(t, every)
		healNow()
		nodes := c.Nodes()
		n := nodes[rng.IntN(len(nodes))]
		if len(order) == 0 {
			order = rng.Perm(len(kindNames))
		}
		kind := kindNames[order[0]]
		order = order[1:]
		if kind != "restart" && isLeader(t, n) {
			leaderFaults = append(leaderFaults, w.hist.Now())
		}
		var err error
		switch kind {
		case "kill":
			err = n.Kill()
			heal = n.Restart
		case "pause":
			err = n.Pause()
			heal = n.Resume
		case "isolate":
			err = c.Isolate(t.Context(), n)
			heal = func() error { return c.Heal(t.Context()) }
		case "restart":
			if err = n.Stop(); err == nil {
				err = n.Restart()
			}
		}
		if err != nil {
			t.Fatalf("%s %s: %v", kind, n, err)
		}
		faults++
		kinds[kind]++
		t.Logf("fault %d: %s %s", faults, kind, n)
	}
	passTime(t, every)
	healNow()
	passTime(t, every/2)
	final := w.finish(t, c)
	if n := w.hist.Count(); float64(n.Ops+n.Dropped)/total.Seconds() < 50 {
		t.Errorf("load was %.0f ops/s, want at least 50", float64(n.Ops+n.Dropped)/total.Seconds())
	}
	row := w.verdict(t, "mixed faults", final)
	row.Faults = faults
	t.Logf("round %d: fault kinds %v; %d took the leader away", round, kinds, len(leaderFaults))
	row.failovers = w.hist.Recovery(leaderFaults)
	return row
}

// isLeader reports whether n says it leads (false if it does not answer
// within a second).
func isLeader(t *testing.T, n *harness.Node) bool {
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	return err == nil && st.GetRole() == "leader"
}

// The class of stale read Jepsen found in etcd and Consul: a leader frozen
// (SIGSTOP) while the others elect a new leader and commit writes, then
// resumed with a burst of LINEARIZABLE reads already queued on its sockets.
// It still believes it leads when it wakes; none of those reads may return
// its stale state. The history is linearizable and nothing is lost.
func TestAPausedOldLeaderServesNoStaleReadsWhenItResumes(t *testing.T) {
	t.Parallel()
	report := startScenario(t)
	c := harness.Start(t, harness.Options{})
	if _, err := c.WaitSettled(t.Context()); err != nil {
		t.Fatal(err)
	}
	scenario := reportRow{Scenario: "paused old leader resumes into a read burst", FalseExpirations: notApplicable}
	reportRounds(t, report, scenario, 1, 0.05, func(round int) reportRow {
		w := startWorkload(t, c.Nodes(), workloadOptions{Prefix: fmt.Sprintf("paused%d", round)})
		passTime(t, time.Second)
		old := waitLeader(t, c)
		var majority []*harness.Node
		for _, n := range c.Nodes() {
			if n != old {
				majority = append(majority, n)
			}
		}
		pausedAt := w.hist.Now()
		acked := w.hist.Count().AckedWrites
		if err := old.Pause(); err != nil {
			t.Fatal(err)
		}
		waitLeaderAmong(t, c, majority)
		poll.Eventually(t, replicationTimeout, func(context.Context) error {
			if n := w.hist.Count().AckedWrites - acked; n < 20 {
				return fmt.Errorf("%d writes acknowledged by the new leader, want 20", n)
			}
			return nil
		})
		const burst = 40
		var (
			wg     sync.WaitGroup
			served atomic.Int64
		)
		for i := range burst {
			wg.Go(func() {
				in := check.Input{Kind: check.Get, Service: w.services[i%len(w.services)]}
				if w.do(t.Context(), int(w.clientIDs.Add(1)-1), old, in, 3*time.Second).Outcome == check.OK {
					served.Add(1)
				}
			})
		}
		// Let the reads reach the frozen node's sockets (load pacing, not
		// a wait for a state), then wake it.
		passTime(t, 200*time.Millisecond)
		if err := old.Resume(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		passTime(t, time.Second)
		final := w.finish(t, c)
		row := w.verdict(t, "paused old leader", final)
		row.Faults = 1
		row.failovers = w.hist.Recovery([]time.Duration{pausedAt})
		t.Logf("round %d: %s resumed with %d LINEARIZABLE reads queued: %d answered (each checked), %d refused",
			round, old, burst, served.Load(), burst-int(served.Load()))
		return row
	})
}
