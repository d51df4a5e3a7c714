package integration_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

func TestLeaderKillLosesNoAcknowledgedRegistration(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	oldLeader := waitLeader(t, c)
	follower := c.Followers()[0]

	// 100 registrations, every one acknowledged before the leader dies.
	var orders []*registryv1.Instance
	for i := range 100 {
		orders = append(orders, newInstance("orders", fmt.Sprintf("orders-%03d", i), i))
	}
	acked := registerAll(t, []*harness.Node{follower}, 8, orders)

	// More registrations keep arriving through the follower while the
	// leader dies; the acknowledged ones must survive as well.
	w := startWriter(t, follower, "orders-inflight")
	poll.Eventually(t, replicationTimeout, w.acknowledgedAtLeast(10))

	if err := oldLeader.Kill(); err != nil {
		t.Fatal(err)
	}
	ackedAtKill := len(w.acknowledged())
	newLeader := waitLeader(t, c)
	if newLeader == oldLeader {
		t.Fatalf("%s, killed, is still the leader", oldLeader)
	}
	// Writes through the follower work again under the new leader.
	poll.Eventually(t, replicationTimeout, w.acknowledgedAtLeast(ackedAtKill+10))
	inflight := w.stop()

	resp, err := getService(t.Context(), newLeader, "orders", registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(acked, recordsOf(resp.GetInstances())); diff != "" {
		t.Errorf("LINEARIZABLE read on the new leader %s after killing %s (-acknowledged +read):\n%s", newLeader, oldLeader, diff)
	}
	resp, err = getService(t.Context(), newLeader, "orders-inflight", registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	if lost := missingFrom(ids(resp.GetInstances()), inflight); len(lost) > 0 {
		t.Errorf("registrations acknowledged during the failover are lost on %s: %v", newLeader, lost)
	}
	t.Logf("%d registrations acknowledged during the failover, %d failed (not acknowledged)", len(inflight), w.failures())

	// The killed node restarts from its data directory and catches up.
	if err := oldLeader.Restart(); err != nil {
		t.Fatal(err)
	}
	got := waitForCount(t, oldLeader, "orders", len(acked))
	if diff := cmp.Diff(acked, recordsOf(got)); diff != "" {
		t.Errorf("STALE read on the restarted %s (-acknowledged +read):\n%s", oldLeader, diff)
	}
}

// writer registers instances of one service through one node, one after
// another, until stopped, and remembers which were acknowledged.
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	acked  []string
	failed int
}

// startWriter starts a writer; it is stopped at the latest by the test's
// cleanup, before the cluster's.
func startWriter(t *testing.T, node *harness.Node, service string) *writer {
	ctx, cancel := context.WithCancel(t.Context())
	w := &writer{cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, node, service)
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *writer) run(ctx context.Context, node *harness.Node, service string) {
	defer close(w.done)
	const (
		callBound   = 2 * time.Second
		afterFailed = 20 * time.Millisecond // pace retries while there is no leader
	)
	for i := 0; ctx.Err() == nil; i++ {
		in := newInstance(service, fmt.Sprintf("%s-%05d", service, i), i)
		callCtx, cancel := context.WithTimeout(ctx, callBound)
		_, err := node.RegistryClient().Register(callCtx, &registryv1.RegisterRequest{Instance: in})
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked = append(w.acked, in.GetId())
		} else if ctx.Err() == nil {
			w.failed++
		}
		w.mu.Unlock()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(afterFailed):
			}
		}
	}
}

// stop stops the writer and returns the acknowledged ids.
func (w *writer) stop() []string {
	w.cancel()
	<-w.done
	return w.acknowledged()
}

func (w *writer) acknowledged() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

func (w *writer) failures() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// acknowledgedAtLeast is a condition for Eventually.
func (w *writer) acknowledgedAtLeast(n int) func(context.Context) error {
	return func(context.Context) error {
		if got := len(w.acknowledged()); got < n {
			return fmt.Errorf("writer has %d acknowledged registrations, want %d (%d failed)", got, n, w.failures())
		}
		return nil
	}
}

func TestFullRestartFromDiskKeepsEverything(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	waitLeader(t, c)

	var acked []record
	registerMore := func(t *testing.T, n int) {
		t.Helper()
		var instances []*registryv1.Instance
		for range n {
			i := len(acked) + len(instances)
			instances = append(instances, newInstance("inventory", fmt.Sprintf("inventory-%04d", i), i))
		}
		acked = append(acked, registerAll(t, c.Nodes(), 6, instances)...)
	}
	everyNodeHasEverything := func(t *testing.T) {
		t.Helper()
		for _, n := range c.Nodes() {
			got := waitForCount(t, n, "inventory", len(acked))
			if diff := cmp.Diff(acked, recordsOf(got)); diff != "" {
				t.Errorf("STALE read on %s after the restart (-acknowledged +read):\n%s", n, diff)
			}
		}
	}

	ok := t.Run("after SIGKILL of every node", func(t *testing.T) {
		registerMore(t, 40)
		if err := c.KillAll(); err != nil {
			t.Fatal(err)
		}
		if err := c.RestartAll(); err != nil {
			t.Fatal(err)
		}
		waitLeader(t, c)
		everyNodeHasEverything(t)
	})
	if !ok {
		return
	}
	t.Run("after graceful SIGTERM of every node", func(t *testing.T) {
		registerMore(t, 40)
		// Leader first, so that it hands leadership over; each node must
		// exit with status 0 within the stop timeout.
		leader := waitLeader(t, c)
		for _, n := range append([]*harness.Node{leader}, c.Followers()...) {
			if err := n.Stop(); err != nil {
				t.Errorf("graceful stop: %v", err)
			}
		}
		if err := c.RestartAll(); err != nil {
			t.Fatal(err)
		}
		waitLeader(t, c)
		everyNodeHasEverything(t)
	})
}
