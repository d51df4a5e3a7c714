package integration_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// Bounds of the waits in these tests: far above what a healthy cluster on a
// loaded two-core machine needs, far below the go test timeout.
const (
	leaderTimeout      = 15 * time.Second
	replicationTimeout = 15 * time.Second
	callTimeout        = 5 * time.Second
)

// Timing of the instances the tests register: a beat every second, suspect
// after 10 minutes, removed after 20, so that no test outlives an instance.
const (
	beatInterval = time.Second
	suspectAfter = 10 * time.Minute
	ttl          = 20 * time.Minute
)

// waitLeader waits for the running nodes to agree on a leader.
func waitLeader(t *testing.T, c *harness.Cluster) *harness.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), leaderTimeout)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// newInstance is a valid registration of service/id, incarnation 1, with the
// long timing above and an address derived from n.
func newInstance(service, id string, n int) *registryv1.Instance {
	return &registryv1.Instance{
		Service:      service,
		Id:           id,
		Address:      fmt.Sprintf("10.%d.%d.%d:8080", n>>16&0xff, n>>8&0xff, n&0xff),
		Incarnation:  1,
		BeatInterval: durationpb.New(beatInterval),
		SuspectAfter: durationpb.New(suspectAfter),
		Ttl:          durationpb.New(ttl),
	}
}

// record is what a client chose for an instance, plus the Raft index of its
// registration: the fields every replica must agree on.
type record struct {
	Service      string
	ID           string
	Address      string
	Metadata     map[string]string
	Incarnation  uint64
	BeatInterval time.Duration
	SuspectAfter time.Duration
	TTL          time.Duration
	CreateIndex  uint64
}

func recordOf(in *registryv1.Instance) record {
	r := record{
		Service:      in.GetService(),
		ID:           in.GetId(),
		Address:      in.GetAddress(),
		Incarnation:  in.GetIncarnation(),
		BeatInterval: in.GetBeatInterval().AsDuration(),
		SuspectAfter: in.GetSuspectAfter().AsDuration(),
		TTL:          in.GetTtl().AsDuration(),
		CreateIndex:  in.GetCreateIndex(),
	}
	if len(in.GetMetadata()) > 0 {
		r.Metadata = in.GetMetadata()
	}
	return r
}

// recordsOf returns the records of instances, sorted by id.
func recordsOf(instances []*registryv1.Instance) []record {
	records := make([]record, len(instances))
	for i, in := range instances {
		records[i] = recordOf(in)
	}
	slices.SortFunc(records, func(a, b record) int { return cmp.Compare(a.ID, b.ID) })
	return records
}

// register registers in through node and returns the record of what was
// sent, with the index the registry acknowledged. Registration is idempotent,
// so, like any client, it retries while the cluster answers Unavailable (no
// leader yet, leadership lost mid-commit), and logs that it did.
func register(t *testing.T, node *harness.Node, in *registryv1.Instance) (record, error) {
	ctx, cancel := context.WithTimeout(t.Context(), replicationTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		callCtx, cancelCall := context.WithTimeout(ctx, callTimeout)
		resp, err := node.RegistryClient().Register(callCtx, &registryv1.RegisterRequest{Instance: in})
		cancelCall()
		if err == nil {
			sent := recordOf(in)
			sent.CreateIndex = resp.GetIndex()
			return sent, nil
		}
		err = fmt.Errorf("Register %s/%s through %s (attempt %d): %w", in.GetService(), in.GetId(), node, attempt, err)
		if status.Code(err) != codes.Unavailable || !waitUntil(ctx, time.Now().Add(retryPause)) {
			return record{}, err
		}
		t.Logf("retrying: %v", err)
	}
}

// retryPause paces the retries of an Unavailable registration.
const retryPause = 100 * time.Millisecond

// registerAll registers every instance with the given number of concurrent
// workers, worker w sending through nodes[w%len(nodes)]. Every registration
// must be acknowledged. It returns the acknowledged records sorted by id.
func registerAll(t *testing.T, nodes []*harness.Node, workers int, instances []*registryv1.Instance) []record {
	t.Helper()
	records := make([]record, len(instances))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			node := nodes[w%len(nodes)]
			for i := w; i < len(instances); i += workers {
				r, err := register(t, node, instances[i])
				if err != nil {
					errs[w] = err
					return
				}
				records[i] = r
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("registration not acknowledged: %v", err)
		}
	}
	slices.SortFunc(records, func(a, b record) int { return cmp.Compare(a.ID, b.ID) })
	return records
}

// getService reads service from node with the given consistency, SUSPECT
// instances included.
func getService(ctx context.Context, node *harness.Node, service string, consistency registryv1.Consistency) (*registryv1.GetServiceResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := node.RegistryClient().GetService(ctx, &registryv1.GetServiceRequest{
		Service:        service,
		Consistency:    consistency,
		IncludeSuspect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("GetService %s (%v) on %s: %w", service, consistency, node, err)
	}
	return resp, nil
}

// waitForCount polls a STALE read of service on node until it returns n
// instances and returns them.
func waitForCount(t *testing.T, node *harness.Node, service string, n int) []*registryv1.Instance {
	t.Helper()
	var instances []*registryv1.Instance
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		resp, err := getService(ctx, node, service, registryv1.Consistency_CONSISTENCY_STALE)
		if err != nil {
			return err
		}
		if got := len(resp.GetInstances()); got != n {
			return fmt.Errorf("%s has %d instances of %s, want %d (applied index %d)", node, got, service, n, resp.GetIndex())
		}
		instances = resp.GetInstances()
		return nil
	})
	return instances
}

// ids returns the ids of instances in order.
func ids(instances []*registryv1.Instance) []string {
	out := make([]string, len(instances))
	for i, in := range instances {
		out[i] = in.GetId()
	}
	return out
}

// waitUntil waits for the wall clock to reach due; it reports false if ctx
// ended first. It paces a load generator: it does not wait for a state.
func waitUntil(ctx context.Context, due time.Time) bool {
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
