package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/check"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// soakEnv, when set to a duration, runs the long (soak) form of the fault
// scenarios: `make soak DURATION=30m` sets it to the whole run's length and
// runs the scenarios one at a time, each for its share of it.
const soakEnv = "REGCENTER_SOAK"

// soaking reports whether this is a soak run, and its length.
func soaking(t *testing.T) (time.Duration, bool) {
	t.Helper()
	v := os.Getenv(soakEnv)
	if v == "" {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", soakEnv, v)
	}
	return d, true
}

// soakDuration returns def, or in a soak run the scenario's share of it
// (at least def).
func soakDuration(t *testing.T, def time.Duration, share float64) time.Duration {
	t.Helper()
	total, ok := soaking(t)
	if !ok {
		return def
	}
	return max(def, time.Duration(float64(total)*share))
}

// rounds runs round(i) for i = 0, 1, ... : n times, or in a soak run for
// the scenario's share of it (at least n times).
func rounds(t *testing.T, n int, share float64, round func(i int)) int {
	t.Helper()
	end := time.Now().Add(soakDuration(t, 0, share))
	i := 0
	for ; i < n || time.Now().Before(end); i++ {
		if t.Failed() {
			break
		}
		round(i)
	}
	return i
}

// Timing of the workload's instances: nobody beats them, and they outlive
// every test, so that only the workload's writes change the registry.
const (
	workloadBeat = time.Hour
	workloadTTL  = 3 * time.Hour
)

// workload is a set of clients doing register / deregister / LINEARIZABLE
// get on a few services with a few ids each, every operation recorded in a
// check.History.
type workload struct {
	nodes    []*harness.Node
	services []string
	ids      []string
	hist     *check.History
	// incarnations counts per instance, so that registers mostly go up
	// and a lower one is fenced only when two race.
	mu           sync.Mutex
	incarnations map[string]uint64
	clientIDs    atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// failoverPause is how long a workload client avoids a node that failed
// one of its calls.
const failoverPause = time.Second

// workloadOptions shape a workload.
type workloadOptions struct {
	Prefix   string        // of the service names; default "lin"
	Clients  int           // goroutines; default 4
	Services int           // default 3
	IDs      int           // per service; default 4
	Pace     time.Duration // between one client's operations; default 20 ms
	Timeout  time.Duration // per call; default 1 s
}

// startWorkload starts the clients; each sends operation i through
// nodes[(client+i) % len(nodes)]. Stop ends them.
func startWorkload(t *testing.T, nodes []*harness.Node, o workloadOptions) *workload {
	t.Helper()
	o.Prefix = cmpOr(o.Prefix, "lin")
	o.Clients = cmpOr(o.Clients, 4)
	o.Services = cmpOr(o.Services, 3)
	o.IDs = cmpOr(o.IDs, 4)
	o.Pace = cmpOr(o.Pace, 20*time.Millisecond)
	o.Timeout = cmpOr(o.Timeout, time.Second)
	w := &workload{nodes: nodes, hist: check.NewHistory(), incarnations: map[string]uint64{}}
	for i := range o.Services {
		w.services = append(w.services, o.Prefix+"-"+strconv.Itoa(i))
	}
	for i := range o.IDs {
		w.ids = append(w.ids, "i"+strconv.Itoa(i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	w.cancel = cancel
	for c := range o.Clients {
		w.wg.Go(func() { w.client(ctx, c, o) })
	}
	t.Cleanup(w.Stop)
	return w
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stop ends the clients and waits for them.
func (w *workload) Stop() {
	w.cancel()
	w.wg.Wait()
}

func (w *workload) nextIncarnation(service, id string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := service + "/" + id
	w.incarnations[k]++
	return w.incarnations[k]
}

// client runs one client. An operation whose outcome is unknown "crashes"
// the client: it goes on under a new client id, as porcupine expects
// (one pending operation per client).
func (w *workload) client(ctx context.Context, c int, o workloadOptions) {
	rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
	id := int(w.clientIDs.Add(1) - 1)
	next := time.Now()
	// A node that failed a call is avoided for a while, as a client
	// library fails over: it keeps the number of operations with an
	// unknown outcome, which porcupine's search is exponential in, small.
	avoid := make([]time.Time, len(w.nodes))
	for i := 0; ; i++ {
		next = next.Add(o.Pace)
		if !waitUntil(ctx, next) {
			return
		}
		k := (c + i) % len(w.nodes)
		for j := range w.nodes {
			if time.Now().After(avoid[(k+j)%len(w.nodes)]) {
				k = (k + j) % len(w.nodes)
				break
			}
		}
		node := w.nodes[k]
		svc := w.services[rng.IntN(len(w.services))]
		inst := w.ids[rng.IntN(len(w.ids))]
		var in check.Input
		switch r := rng.IntN(10); {
		case r < 4:
			in = check.Input{Kind: check.Register, Service: svc, ID: inst, Incarnation: w.nextIncarnation(svc, inst)}
		case r < 6:
			in = check.Input{Kind: check.Deregister, Service: svc, ID: inst}
		default:
			in = check.Input{Kind: check.Get, Service: svc}
		}
		out := w.do(ctx, id, node, in, o.Timeout)
		if ctx.Err() != nil {
			return
		}
		if out.Outcome == check.Unknown || out.Outcome == check.Failed {
			avoid[k] = time.Now().Add(failoverPause)
		}
		if out.Outcome == check.Unknown && in.Kind != check.Get {
			id = int(w.clientIDs.Add(1) - 1)
		}
	}
}

// do runs and records one operation.
func (w *workload) do(ctx context.Context, client int, node *harness.Node, in check.Input, timeout time.Duration) check.Output {
	p := w.hist.Call(client, node.ID(), in)
	out := runOp(ctx, node, in, timeout)
	p.Return(out)
	return out
}

func runOp(ctx context.Context, node *harness.Node, in check.Input, timeout time.Duration) check.Output {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rc := node.RegistryClient()
	switch in.Kind {
	case check.Register:
		_, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service:      in.Service,
			Id:           in.ID,
			Address:      "10.0.0.1:8080",
			Incarnation:  in.Incarnation,
			BeatInterval: durationpb.New(workloadBeat),
			Ttl:          durationpb.New(workloadTTL),
		}})
		return check.OutcomeOf(err)
	case check.Deregister:
		_, err := rc.Deregister(ctx, &registryv1.DeregisterRequest{Service: in.Service, Id: in.ID})
		return check.OutcomeOf(err)
	default:
		resp, err := rc.GetService(ctx, &registryv1.GetServiceRequest{
			Service:        in.Service,
			Consistency:    registryv1.Consistency_CONSISTENCY_LINEARIZABLE,
			IncludeSuspect: true,
		})
		if err != nil {
			return check.Output{Outcome: check.Unknown, Err: err.Error()}
		}
		return check.Output{Outcome: check.OK, Instances: members(resp.GetInstances()), Index: resp.GetIndex()}
	}
}

func members(instances []*registryv1.Instance) []string {
	m := make([]string, 0, len(instances))
	for _, in := range instances {
		m = append(m, check.Member(in.GetId(), in.GetIncarnation()))
	}
	slices.Sort(m)
	return m
}

// finish reads every service once more with a LINEARIZABLE get (recorded,
// so porcupine checks the final state too), then checks that every running
// node holds the same state at the same applied index with STALE reads,
// and returns that state.
func (w *workload) finish(t *testing.T, c *harness.Cluster) map[string][]string {
	t.Helper()
	w.Stop()
	leader := waitLeader(t, c)
	final := map[string][]string{}
	for _, svc := range w.services {
		poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
			out := w.do(ctx, int(w.clientIDs.Add(1)-1), leader, check.Input{Kind: check.Get, Service: svc}, callTimeout)
			if out.Outcome != check.OK {
				return fmt.Errorf("final read of %s: %s", svc, out.Err)
			}
			final[svc] = out.Instances
			return nil
		})
	}
	begin := time.Now()
	sameStateEverywhereWithin(t, c, w.services, convergeTimeout)
	if d := time.Since(begin); d > replicationTimeout {
		t.Logf("FINDING: the nodes took %v to converge after the last heal (over %v)", d.Round(time.Millisecond), replicationTimeout)
	}
	return final
}

// convergeTimeout bounds the wait for every node to catch up after the
// last fault heals: hashicorp/raft backs off a follower's replication
// after failures up to 10.24 s (failureWait × 2^10), so a follower healed
// just after a long backoff began may lag that long.
const convergeTimeout = 30 * time.Second

// sameStateEverywhere waits until every running node answers a STALE read
// of each service at the same applied index, and compares the answers.
func sameStateEverywhere(t *testing.T, c *harness.Cluster, services []string) {
	t.Helper()
	sameStateEverywhereWithin(t, c, services, replicationTimeout)
}

func sameStateEverywhereWithin(t *testing.T, c *harness.Cluster, services []string, timeout time.Duration) {
	t.Helper()
	poll.Eventually(t, timeout, func(ctx context.Context) error {
		for _, svc := range services {
			var (
				first      []*registryv1.Instance
				firstIndex uint64
				firstNode  *harness.Node
			)
			for _, n := range c.Running() {
				resp, err := getService(ctx, n, svc, registryv1.Consistency_CONSISTENCY_STALE)
				if err != nil {
					return err
				}
				if firstNode == nil {
					first, firstIndex, firstNode = resp.GetInstances(), resp.GetIndex(), n
					continue
				}
				if resp.GetIndex() != firstIndex {
					return fmt.Errorf("%s: %s is at index %d, %s at %d", svc, n, resp.GetIndex(), firstNode, firstIndex)
				}
				if diff := cmp.Diff(recordsOf(first), recordsOf(resp.GetInstances())); diff != "" {
					t.Errorf("%s at index %d: %s and %s differ (-%s +%s):\n%s", svc, firstIndex, firstNode, n, firstNode, n, diff)
				}
			}
		}
		return nil
	})
}

// porcupineTimeout bounds porcupine's search. Its cost grows with the
// writes whose outcome is unknown (each may take effect at any later
// point); a soak round with 67 of them once took longer than a minute.
const porcupineTimeout = 3 * time.Minute

// verdict checks the history (linearizable, no stale read, no
// acknowledged write lost) and returns the scenario's row, without its
// faults and failover times.
func (w *workload) verdict(t *testing.T, scenario string, final map[string][]string) reportRow {
	t.Helper()
	res := check.Linearizable(t, w.hist, porcupineTimeout)
	stale := w.hist.StaleReads()
	lost := w.hist.LostWrites(final)
	for i, s := range stale {
		if i == 10 {
			break
		}
		t.Errorf("stale linearizable read: %+v", s)
	}
	for i, l := range lost {
		if i == 10 {
			break
		}
		t.Errorf("acknowledged write lost: %+v (final %v)", l.Op, l.Final)
	}
	n := w.hist.Count()
	t.Logf("%s: ops_checked=%d (writes %d acked %d unknown %d, reads %d; %d refused or failed reads not checked) porcupine=%s",
		scenario, n.Ops, n.Writes, n.AckedWrites, n.UnknownWrites, n.Reads, n.Dropped, res)
	return reportRow{Scenario: scenario, Ops: n.Ops, Lost: len(lost), FalseExpirations: notApplicable, StaleReads: len(stale)}
}

// sameHashEverywhere waits until every running node holds byte-identical
// state at one applied index (the cluster must be quiescent) and logs it.
func sameHashEverywhere(t *testing.T, c *harness.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), convergeTimeout)
	defer cancel()
	hash, index, err := c.WaitSameState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every running node holds state %.16s at index %d", hash, index)
}
