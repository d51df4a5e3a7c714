package composetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// The read replicas' steps. The replicas (profile "replicas") join as
// Raft non-voters; the fleet's clients register and beat through the
// voters only, so a replica's faults must not touch them.

// trailingLogs is REGISTRY_TRAILING_LOGS of testdata/small-snapshots.yml:
// after a snapshot at index S the leader keeps the log from S-trailingLogs
// (at most) on.
const trailingLogs = 64

// Bounds of the replica steps.
const (
	// replicaWrites are the writes (barriers) made through the voters
	// while a replica is killed.
	replicaWrites = 50
	// partitionBatch writes go through between two looks at the leader's
	// snapshot index while a replica is cut off; at most
	// maxPartitionWrites in all.
	partitionBatch     = 50
	maxPartitionWrites = 3000
	// partitionMargin is added to a replica's last log index read before
	// it is cut off: entries replicated to it before the cut takes effect.
	partitionMargin = 100
)

// replicaReads: the leader's configuration holds the replicas as
// non-voters (role replica) and the nodes as voters; each replica follows
// and knows that leader, serves with STALE reads what was written through
// the voters (a barrier), and holds the same state as the voters; the
// watch through each replica has every instance (waitConverged).
func replicaReads(t *testing.T, p *project, f *fleet) {
	leader := p.waitLeader(t, electionTimeout, p.nodes...)
	st, err := status(t.Context(), leader)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, m := range st.Members {
		roles[m.Id] = m.Role
	}
	for _, n := range p.all() {
		want := "voter"
		if slices.Contains(p.replicas, n) {
			want = "replica"
		}
		if roles[n.id] != want {
			t.Errorf("the leader's members: %s is %q, want %s (members %v)", n, roles[n.id], want, roles)
		}
	}
	for _, r := range p.replicas {
		st, err := status(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role != "follower" || st.LeaderId != leader.id {
			t.Errorf("%s: raft role %q, leader %q; want follower of %s", r, st.Role, st.LeaderId, leader)
		}
	}
	index, err := p.barrier(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.replicas {
		p.waitMarker(t, r, index)
	}
	p.waitConverged(t, f)
}

// waitMarker waits until r answers a STALE GetService of the marker with
// the barrier written last (at index).
func (p *project) waitMarker(t *testing.T, r *node, index uint64) {
	t.Helper()
	poll.Eventually(t, catchUpTimeout, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := r.registry().GetService(ctx, &registryv1.GetServiceRequest{
			Service: markerService, Consistency: registryv1.Consistency_CONSISTENCY_STALE})
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		if len(resp.Instances) != 1 || resp.Instances[0].Incarnation != p.markers || resp.Index < index {
			return fmt.Errorf("%s answers %d marker instances at index %d, want incarnation %d at index %d or above",
				r, len(resp.Instances), resp.Index, p.markers, index)
		}
		return nil
	})
	t.Logf("%s serves the barrier written at index %d through the voters (STALE read)", r, index)
}

// killReplica: docker kill a replica → writes through the voters are all
// acknowledged at the first attempt, every instance beats on (no
// registration event at all: not even a Lost), the other replica serves
// the writes; docker start it → it catches up, and its watch (whose only
// endpoint it is) resumes.
func killReplica(t *testing.T, p *project, rec *recorder, f *fleet) {
	r, other := p.replicas[0], p.replicas[1]
	fleetMark := f.mark()
	term := p.term(t)
	id := p.containerOrFail(t, r)
	p.dockerOrFail(t, "kill", id)
	killed := time.Now()
	t.Logf("killed replica %s", r)
	var index uint64
	var failed []error
	for range replicaWrites {
		var errs []error
		index, errs = p.write(t)
		failed = append(failed, errs...)
	}
	t.Logf("%d writes acknowledged with %s killed, the last at index %d", replicaWrites, r, index)
	p.waitMarker(t, other, index)
	settle(t, p, rec, f, killed) // every instance beat after the kill
	p.checkUnaffected(t, term, f, fleetMark, failed)

	p.dockerOrFail(t, "start", id)
	p.waitCaughtUp(t, catchUpTimeout, r, p.nodes)
	p.waitHealthy(t, readyTimeout, r)
	p.waitConverged(t, f)
}

// partitionReplica: docker network disconnect a replica and write through
// the voters until the leader has taken a snapshot and compacted its log
// past the replica's last entry (small snapshots:
// testdata/small-snapshots.yml) → every write is acknowledged and every
// instance beats on; reconnect it → it catches up by snapshot (its
// snapshot index reaches the leader's, which it could not reach from its
// own log) and holds the voters' state; its watch resumes.
func partitionReplica(t *testing.T, p *project, rec *recorder, f *fleet) {
	r := p.replicas[1]
	fleetMark := f.mark()
	term := p.term(t)
	lastLog := p.metricOrFail(t, r, "registry_raft_last_log_index")
	snap0 := p.metricOrFail(t, r, "registry_raft_last_snapshot_index")
	network, aliases := p.network(t, r)
	if !slices.Contains(aliases, r.service) {
		t.Fatalf("%s's aliases on %s are %v, want %s among them", r, network, aliases, r.service)
	}
	id := p.containerOrFail(t, r)
	p.dockerOrFail(t, "network", "disconnect", network, id)
	cut := time.Now()
	t.Logf("disconnected %s from %s: its log ended at index %d, its snapshot at %d", r, network, lastLog, snap0)

	// Past the replica's log: the leader's snapshot index minus the
	// trailing logs it keeps is beyond the replica's last entry.
	want := lastLog + partitionMargin + trailingLogs
	var leaderSnap uint64
	var failed []error
	writes := 0
	for {
		for range partitionBatch {
			_, errs := p.write(t)
			failed = append(failed, errs...)
			writes++
		}
		leader := p.waitLeader(t, electionTimeout, p.nodes...)
		leaderSnap = p.metricOrFail(t, leader, "registry_raft_last_snapshot_index")
		if leaderSnap > want {
			t.Logf("%d writes acknowledged with %s cut off; leader %s snapshotted at index %d (compacted past %d)",
				writes, r, leader, leaderSnap, leaderSnap-trailingLogs)
			break
		}
		if writes >= maxPartitionWrites {
			t.Fatalf("after %d writes the leader's snapshot is at index %d, want above %d", writes, leaderSnap, want)
		}
	}
	settle(t, p, rec, f, cut) // every instance beat after the cut
	p.checkUnaffected(t, term, f, fleetMark, failed)

	p.dockerOrFail(t, "network", "connect", "--alias", r.service, network, id)
	t.Logf("reconnected %s after %v", r, time.Since(cut).Round(time.Millisecond))
	p.waitCaughtUp(t, catchUpTimeout, r, p.nodes)
	var snap uint64
	poll.Eventually(t, catchUpTimeout, func(ctx context.Context) error {
		var err error
		if snap, err = p.metric(ctx, r, "registry_raft_last_snapshot_index"); err != nil {
			return err
		}
		if snap < leaderSnap {
			return fmt.Errorf("%s's snapshot is at index %d, want the leader's %d or above", r, snap, leaderSnap)
		}
		return nil
	})
	t.Logf("%s caught up by snapshot: its snapshot index went from %d to %d (its log had ended at %d)", r, snap0, snap, lastLog)
	p.waitHealthy(t, readyTimeout, r)
	p.waitConverged(t, f)
}

// write writes a barrier through the voters, again after a failure (for
// at most settleTimeout), and returns its index and the failed attempts.
func (p *project) write(t *testing.T) (uint64, []error) {
	t.Helper()
	var index uint64
	var failed []error
	poll.Eventually(t, settleTimeout, func(ctx context.Context) error {
		var err error
		if index, err = p.barrier(ctx); err != nil {
			failed = append(failed, err)
		}
		return err
	})
	return index, failed
}

// term returns the highest Raft term the voters report.
func (p *project) term(t *testing.T) uint64 {
	t.Helper()
	var term uint64
	poll.Eventually(t, electionTimeout, func(ctx context.Context) error {
		term = 0
		for _, n := range p.nodes {
			st, err := status(ctx, n)
			if err != nil {
				return err
			}
			term = max(term, st.Term)
		}
		return nil
	})
	return term
}

// checkUnaffected checks that a replica's fault did not touch the voters'
// clients: with the voters' term unchanged since before the fault (no
// election), every write was acknowledged at its first attempt and the
// fleet's registrations had no event at all (every beat acknowledged: not
// even a Lost). An election during the step is not the replica's doing
// (the voters elect among themselves; on this shared machine a load spike
// can make a leader step down): it is logged, the failed attempts and Lost
// events are allowed, and checkNoLoss still forbids any lost instance.
func (p *project) checkUnaffected(t *testing.T, before uint64, f *fleet, mark int, failed []error) {
	t.Helper()
	if after := p.term(t); after != before {
		t.Logf("the voters held an election during the step (term %d to %d): %d write attempts failed and were retried; registration events: %d",
			before, after, len(failed), len(f.since(mark)))
		return
	}
	for _, err := range failed {
		t.Errorf("a write failed with no election: %v", err)
	}
	for _, e := range f.since(mark) {
		t.Errorf("client: %s %s (incarnation %d): %s", e.key, e.ev.Type, e.ev.Incarnation, e.ev.Reason)
	}
}

// metric reads one unlabelled gauge from n's /metrics (over https with the
// client certificate and the management token).
func (p *project) metric(ctx context.Context, n *node, name string) (uint64, error) {
	cfg, err := p.tls.config()
	if err != nil {
		return 0, err
	}
	cfg.ServerName = "" // the URL's host
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+n.http+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.tls.token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", n, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: GET /metrics: %s", n, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", n, name, err)
		}
		return uint64(f), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: reading /metrics: %w", n, err)
	}
	return 0, fmt.Errorf("%s: /metrics has no %s", n, name)
}

func (p *project) metricOrFail(t *testing.T, n *node, name string) uint64 {
	t.Helper()
	v, err := p.metric(t.Context(), n, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
