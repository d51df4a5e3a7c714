package integration_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// Timing of the instances in the liveness tests: short, so that the suite
// stays fast, with the ratios the brief of the checker suggests.
const (
	liveInterval = 500 * time.Millisecond
	liveSuspect  = 2 * liveInterval
	liveTTL      = 5 * liveInterval
)

// The node's defaults that the bounds depend on (the tests pass no flag).
const (
	sweepInterval = 100 * time.Millisecond // --sweep-interval
	failoverGrace = 2 * time.Second        // --failover-grace
)

// Tolerances of the bounds, measured at the client.
const (
	// ackTolerance: a beat is acknowledged at the client after it is
	// committed, later than the leader stamped it, so a detection measured
	// from the acknowledgement may look this much shorter than the TTL.
	ackTolerance = 50 * time.Millisecond
	// detectionSlack covers the commit of the expiry, its delivery to the
	// watch and scheduling on a loaded two-core machine.
	detectionSlack = time.Second
)

// liveInstance is a registration of service/id with the short timing above.
func liveInstance(service, id string, n int) *registryv1.Instance {
	in := newInstance(service, id, n)
	in.BeatInterval = durationpb.New(liveInterval)
	in.SuspectAfter = durationpb.New(liveSuspect)
	in.Ttl = durationpb.New(liveTTL)
	return in
}

// liveInstances returns n instances spread over services prefix-0..
// prefix-(services-1), and the service names.
func liveInstances(prefix string, services, n int) ([]*registryv1.Instance, []string) {
	names := make([]string, services)
	for s := range services {
		names[s] = fmt.Sprintf("%s-%d", prefix, s)
	}
	out := make([]*registryv1.Instance, n)
	for i := range out {
		out[i] = liveInstance(names[i%services], fmt.Sprintf("%s-%04d", prefix, i), i)
	}
	return out, names
}

// keysOf returns the keys of instances.
func keysOf(instances []*registryv1.Instance) []harness.InstanceKey {
	keys := make([]harness.InstanceKey, len(instances))
	for i, in := range instances {
		keys[i] = harness.KeyOf(in)
	}
	return keys
}

// registerBeating registers every instance through nodes with 16 workers
// and hands each to b as soon as its registration is acknowledged, so that
// none goes unbeaten while the others register.
func registerBeating(t *testing.T, nodes []*harness.Node, b *harness.Beater, instances []*registryv1.Instance) {
	t.Helper()
	const workers = 16
	start := time.Now()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range workers {
		wg.Go(func() {
			node := nodes[w%len(nodes)]
			for {
				i := int(next.Add(1)) - 1
				if i >= len(instances) {
					return
				}
				if _, err := register(t, node, instances[i]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				b.Add(instances[i])
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("registration not acknowledged: %v", errors.Join(errs...))
	}
	t.Logf("registered %d instances in %v", len(instances), time.Since(start).Round(time.Millisecond))
}

// waitCheckerSteady waits until leader's expiry checker runs past its
// failover fence (the fence's remaining time, for an instance with no beat
// interval, is zero at a sweep after the checker started), and returns the
// leader's term.
func waitCheckerSteady(t *testing.T, leader *harness.Node) uint64 {
	t.Helper()
	var (
		runningSince time.Time
		term         uint64
	)
	poll.Eventually(t, leaderTimeout, func(ctx context.Context) (err error) {
		term, err = checkerSteady(ctx, leader, &runningSince)
		return err
	})
	return term
}

// waitSteadyLeader is waitCheckerSteady for whichever node leads: after a
// fault that froze the leader (or every node), leadership may move again
// once the nodes run, and the wait follows it. It returns the leader and
// its term.
func waitSteadyLeader(t *testing.T, c *harness.Cluster) (*harness.Node, uint64) {
	t.Helper()
	var (
		leader       *harness.Node
		runningSince time.Time
		term         uint64
	)
	poll.Eventually(t, leaderTimeout, func(ctx context.Context) error {
		l, err := c.WaitLeader(ctx)
		if err != nil {
			return err
		}
		if l != leader {
			leader, runningSince = l, time.Time{}
		}
		term, err = checkerSteady(ctx, leader, &runningSince)
		return err
	})
	return leader, term
}

// checkerSteady is one look at node: nil once it leads, its checker has
// run for three sweeps since *runningSince (set at the first look that saw
// it running, reset when it is not) and its failover fence is over; then
// term is its term.
func checkerSteady(ctx context.Context, node *harness.Node, runningSince *time.Time) (term uint64, err error) {
	s, err := node.Status(ctx)
	if err != nil {
		return 0, err
	}
	if s.GetRole() != "leader" || !s.GetCheckerRunning() {
		*runningSince = time.Time{}
		return 0, fmt.Errorf("%s: role %s, checker running %v", node, s.GetRole(), s.GetCheckerRunning())
	}
	if runningSince.IsZero() {
		*runningSince = time.Now()
	}
	if time.Since(*runningSince) < 3*sweepInterval {
		return 0, errors.New("checker just started: no sweep seen yet")
	}
	if d := s.GetFailoverFenceRemaining().AsDuration(); d > 0 {
		return 0, fmt.Errorf("%s: failover fence still %v", node, d)
	}
	return s.GetTerm(), nil
}

// newLeaderAfter waits for the running nodes to agree on a leader other
// than old and for its expiry checker to run. checkerAt is when the checker
// was first seen running: an upper estimate of the promotion time that
// starts the failover fence.
func newLeaderAfter(t *testing.T, c *harness.Cluster, old *harness.Node) (leader *harness.Node, checkerAt time.Time) {
	t.Helper()
	leader = waitLeader(t, c)
	if leader == old {
		t.Fatalf("%s is still the leader", old)
	}
	poll.Eventually(t, leaderTimeout, func(ctx context.Context) error {
		s, err := leader.Status(ctx)
		if err != nil {
			return err
		}
		if !s.GetCheckerRunning() {
			return fmt.Errorf("%s (%s, term %d): checker not running", leader, s.GetRole(), s.GetTerm())
		}
		return nil
	})
	return leader, time.Now()
}

// linearizableInstances reads every service with a LINEARIZABLE GetService on
// the leader (retrying while there is none) and returns what it holds,
// SUSPECT instances included.
func linearizableInstances(t *testing.T, c *harness.Cluster, services []string) map[harness.InstanceKey]*registryv1.Instance {
	t.Helper()
	got := make(map[harness.InstanceKey]*registryv1.Instance)
	for _, service := range services {
		poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
			leader, err := c.WaitLeader(ctx)
			if err != nil {
				return err
			}
			resp, err := getService(ctx, leader, service, registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
			if err != nil {
				return err
			}
			for _, in := range resp.GetInstances() {
				got[harness.KeyOf(in)] = in
			}
			return nil
		})
	}
	return got
}

// syncRecorder makes sure rec has received every event committed before
// the call: it registers a marker instance (in a service of its own),
// waits until rec has received its registration, and deregisters it.
func syncRecorder(t *testing.T, c *harness.Cluster, rec *harness.EventRecorder) {
	t.Helper()
	node := c.Running()[0]
	marker := newInstance("liveness-sync", fmt.Sprintf("sync-%d", time.Now().UnixNano()), 0)
	r, err := register(t, node, marker)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), replicationTimeout)
	defer cancel()
	if err := rec.WaitIndex(ctx, r.CreateIndex); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := node.RegistryClient().Deregister(ctx, &registryv1.DeregisterRequest{Service: marker.GetService(), Id: marker.GetId()})
		if status.Code(err) == codes.NotFound {
			return nil // a retried call that had been applied
		}
		return err
	})
}

// latencies are detection latencies, for the summary line.
type latencies []time.Duration

// percentile returns the q-quantile (nearest rank) of l.
func (l latencies) percentile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	rank := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func (l latencies) summary() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), r(l.percentile(0.5)), r(l.percentile(0.99)), r(l.percentile(1)))
}

// eventsByKey indexes events by instance, keeping the first of each.
func eventsByKey(events []harness.RecordedEvent) map[harness.InstanceKey]harness.RecordedEvent {
	out := make(map[harness.InstanceKey]harness.RecordedEvent, len(events))
	for _, ev := range events {
		if _, ok := out[ev.Key()]; !ok {
			out[ev.Key()] = ev
		}
	}
	return out
}

// haveEvents is a condition for Eventually: rec has received an event of
// type typ for every key.
func haveEvents(rec *harness.EventRecorder, typ registryv1.EventType, keys []harness.InstanceKey) func(context.Context) error {
	return func(context.Context) error {
		got := eventsByKey(rec.EventsOf(typ))
		var missing []string
		for _, k := range keys {
			if _, ok := got[k]; !ok {
				missing = append(missing, k.String())
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d instances have no %v event yet (e.g. %s)", len(missing), len(keys), typ, missing[0])
		}
		return nil
	}
}

// describeEvents lists at most n events, for failure messages.
func describeEvents(events []harness.RecordedEvent, n int) string {
	var b strings.Builder
	for i, ev := range events {
		if i == n {
			fmt.Fprintf(&b, "\n  ... and %d more", len(events)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %v %s at index %d, received %s from %s, since_last_beat %v",
			ev.GetType(), ev.Key(), ev.GetIndex(), ev.ReceivedAt.Format("15:04:05.000"), ev.Node,
			ev.GetSinceLastBeat().AsDuration().Round(time.Millisecond))
	}
	return b.String()
}

// checkNoFalseExpiry is the common end of the failover tests: with the
// beater still beating, every instance is present (LINEARIZABLE), no
// EXPIRED event was received for any of them, no reset hid a removal, and
// no beat was rejected. It logs the SUSPECT events (allowed, ideally none).
func checkNoFalseExpiry(t *testing.T, c *harness.Cluster, b *harness.Beater, rec *harness.EventRecorder, instances []*registryv1.Instance, services []string) {
	t.Helper()
	present := linearizableInstances(t, c, services)
	syncRecorder(t, c, rec)

	var missing []string
	suspectNow := 0
	for _, in := range instances {
		got, ok := present[harness.KeyOf(in)]
		if !ok {
			missing = append(missing, harness.KeyOf(in).String())
			continue
		}
		if got.GetState() == registryv1.InstanceState_INSTANCE_STATE_SUSPECT {
			suspectNow++
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d beaten instances are missing from a LINEARIZABLE read: %v", len(missing), len(instances), missing[:min(len(missing), 10)])
	}
	if expired := rec.EventsOf(registryv1.EventType_EVENT_TYPE_EXPIRED, services...); len(expired) > 0 {
		t.Errorf("%d false expiries of beaten instances:%s", len(expired), describeEvents(expired, 10))
	}
	for _, r := range rec.Resets() {
		if len(r.Vanished) > 0 {
			t.Errorf("a reset at index %d from %s shows %d instances removed by events the watch never delivered: %v",
				r.Index, r.Node, len(r.Vanished), r.Vanished[:min(len(r.Vanished), 10)])
		}
	}
	st := b.Stats()
	if st.Unknown+st.Fenced > 0 {
		t.Errorf("beats rejected: %d UNKNOWN (the instance was removed), %d FENCED", st.Unknown, st.Fenced)
	}
	suspects := rec.EventsOf(registryv1.EventType_EVENT_TYPE_SUSPECT, services...)
	reacquired := rec.EventsOf(registryv1.EventType_EVENT_TYPE_REACQUIRED, services...)
	// Instances that went longer than their TTL without an acknowledged
	// beat were kept only by the failover or stall fence.
	var maxGap time.Duration
	pastTTL := 0
	for _, r := range b.Records() {
		maxGap = max(maxGap, r.MaxGap)
		if r.MaxGap > liveTTL {
			pastTTL++
		}
	}
	t.Logf("%d instances: 0 expected expiries, %d EXPIRED; %d SUSPECT events, %d REACQUIRED, %d SUSPECT at the end; "+
		"beats: %d calls, %d failed, %d failovers, %d acknowledged, longest call %v, longest gap between two acknowledged beats of one instance %v "+
		"(%d instances went longer than their TTL %v without one); watch: %d failovers, %d resets",
		len(instances), len(rec.EventsOf(registryv1.EventType_EVENT_TYPE_EXPIRED, services...)), len(suspects), len(reacquired), suspectNow,
		st.Calls, st.FailedCalls, st.Failovers, st.Acked, st.MaxCall.Round(time.Millisecond), maxGap.Round(time.Millisecond),
		pastTTL, liveTTL, rec.Failovers(), len(rec.Resets()))
	if len(suspects) > 0 {
		t.Logf("SUSPECT events (allowed, ideally none):%s", describeEvents(suspects, 10))
	}
}

// passTime lets d pass in a scenario ("keep beating for d"); it does not
// wait for a state.
func passTime(t *testing.T, d time.Duration) {
	t.Helper()
	if !waitUntil(t.Context(), time.Now().Add(d)) {
		t.Fatal("test context ended")
	}
}

// fleet is a cluster whose instances beat, with a recorder of every event.
type fleet struct {
	c      *harness.Cluster
	leader *harness.Node // when the instances were registered
	term   uint64        // its term then
	rec    *harness.EventRecorder
	b      *harness.Beater
	// instances have the live timing, spread over services.
	instances []*registryv1.Instance
	services  []string
}

// startFleet starts a cluster with opts and n instances of the live timing
// over services prefix-0..prefix-(services-1), beaten by a Beater through
// every node and watched by an EventRecorder that starts on a follower (a
// watch on a leader about to be killed or paused would only wait), or on
// the leader with watchLeader (it applies first). It returns once the
// leader's checker runs past its failover fence and every instance has an
// acknowledged beat.
func startFleet(t *testing.T, opts harness.Options, prefix string, services, n int, watchLeader bool) fleet {
	t.Helper()
	f := fleet{c: harness.Start(t, opts)}
	f.leader = waitLeader(t, f.c)
	watched := append(f.c.Followers(), f.leader)
	if watchLeader {
		watched = append([]*harness.Node{f.leader}, f.c.Followers()...)
	}
	f.rec = harness.NewEventRecorder(t, watched, t.Logf)
	f.b = harness.NewBeater(t, f.c.Nodes(), harness.BeaterOptions{Logf: t.Logf})
	f.instances, f.services = liveInstances(prefix, services, n)
	registerBeating(t, f.c.Nodes(), f.b, f.instances)
	f.term = waitCheckerSteady(t, f.leader)
	poll.Eventually(t, replicationTimeout, f.b.AckedSince(time.Now()))
	return f
}
