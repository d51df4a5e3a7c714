package integration_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// groupCommitWindow is the least time between two beat flushes on the
// leader (groupcommit.DefaultConfig().Window): at most 100 entries a second.
const groupCommitWindow = 10 * time.Millisecond

func TestBeatsAreGroupCommitted(t *testing.T) {
	const (
		registerWorkers = 16
		beaters         = 8 // each with its own connection
		rounds          = 5 // every instance beats once per round (second)
		// Each beater sends its share of a round in batchesPerRound calls,
		// batchEvery apart, offset from the other beaters: beats arrive
		// continuously, in 400 calls a second, four times what 100 entries
		// a second could carry one call each.
		batchesPerRound = 50
		batchEvery      = time.Second / batchesPerRound
		services        = 16
		registerBudget  = 40 * time.Second
		beatBudget      = 20 * time.Second
	)
	instances := 10_000
	if testing.Short() {
		instances = 2_000
	}

	c := harness.Start(t, harness.Options{})
	leader := waitLeader(t, c)

	all := make([]*registryv1.Instance, instances)
	for i := range all {
		all[i] = newInstance(fmt.Sprintf("beat-%02d", i%services), fmt.Sprintf("i-%05d", i), i)
	}
	registerStart := time.Now()
	registerAll(t, c.Nodes(), registerWorkers, all)
	if took := time.Since(registerStart); took > registerBudget {
		t.Fatalf("registering %d instances took %v, budget %v", instances, took, registerBudget)
	} else {
		t.Logf("registered %d instances in %v through %d nodes", instances, took.Round(time.Millisecond), len(c.Nodes()))
	}

	// Beater g owns every beaters-th instance and talks to node g%3, so
	// that beats go through the followers and the leader alike.
	type beater struct {
		client  registryv1.RegistryClient
		batches [batchesPerRound][]*registryv1.InstanceRef
		// Per round and batch, each written by its call's goroutine only.
		resps [rounds][batchesPerRound]*registryv1.BeatResponse
		errs  [rounds][batchesPerRound]error
	}
	beats := make([]*beater, beaters)
	for g := range beaters {
		conn, err := c.Nodes()[g%len(c.Nodes())].Dial()
		if err != nil {
			t.Fatal(err)
		}
		b := &beater{client: registryv1.NewRegistryClient(conn)}
		for k, i := 0, g; i < instances; k, i = k+1, i+beaters {
			ref := &registryv1.InstanceRef{Service: all[i].GetService(), Id: all[i].GetId(), Incarnation: 1}
			b.batches[k%batchesPerRound] = append(b.batches[k%batchesPerRound], ref)
		}
		beats[g] = b
	}

	ctx, cancel := context.WithTimeout(t.Context(), beatBudget)
	defer cancel()
	before, err := leader.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every call starts at its due time on a goroutine of its own, whatever
	// the latency of the earlier ones, so that the load does not shrink to
	// what the server absorbs.
	start := time.Now()
	calls := 0
	var wg sync.WaitGroup
	for r := range rounds {
		for i := range batchesPerRound {
			for g, b := range beats {
				due := start.Add(time.Duration(r)*time.Second + time.Duration(i)*batchEvery + time.Duration(g)*batchEvery/beaters)
				if !waitUntil(ctx, due) {
					break
				}
				calls++
				wg.Go(func() {
					req := &registryv1.BeatRequest{Beats: b.batches[i], Seq: uint64(r*batchesPerRound + i)}
					b.resps[r][i], b.errs[r][i] = b.client.Beat(ctx, req)
				})
			}
		}
	}
	wg.Wait()
	window := time.Since(start)
	after, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	// Every beat was acknowledged, none rejected.
	acked, failed, rejected := 0, 0, 0
	for g, b := range beats {
		for r := range rounds {
			for i, batch := range b.batches {
				resp, err := b.resps[r][i], b.errs[r][i]
				switch {
				case err != nil:
					if failed++; failed <= 3 {
						t.Errorf("beater %d, round %d, batch %d: %v", g, r, i, err)
					}
				case resp == nil:
					failed++ // never sent: the beat budget ran out
				default:
					acked += len(batch) - len(resp.GetRejected())
					for _, rej := range resp.GetRejected() {
						if rejected++; rejected <= 3 {
							t.Errorf("beat rejected: %v", rej)
						}
					}
				}
			}
		}
	}
	if want := instances * rounds; acked != want {
		t.Fatalf("%d beats acknowledged, want %d (%d calls failed or unsent, %d beats rejected)", acked, want, failed, rejected)
	}
	if after.GetTerm() != before.GetTerm() || after.GetRole() != "leader" {
		t.Fatalf("leadership changed during the beats: %s was leader in term %d, now %s in term %d",
			leader, before.GetTerm(), after.GetRole(), after.GetTerm())
	}

	// The leader's log grew by at most one entry per group-commit window.
	entries := after.GetLastLogIndex() - before.GetLastLogIndex()
	seconds := window.Seconds()
	t.Logf("%d beats in %d calls over %v: %.0f beats/s, %.0f calls/s, committed in %d Raft entries: %.1f entries/s (%.0f beats per entry)",
		acked, calls, window.Round(time.Millisecond), float64(acked)/seconds, float64(calls)/seconds,
		entries, float64(entries)/seconds, float64(acked)/float64(max(entries, 1)))
	// Flushes start at least one window apart, so a span of w holds at most
	// w/window + 1 of them.
	limit := uint64(window/groupCommitWindow) + 1
	if uint64(calls) <= limit {
		t.Fatalf("only %d calls in %v: too few to tell group commit (at most %d entries) from one entry per call", calls, window, limit)
	}
	if entries > limit {
		t.Errorf("the leader's log grew by %d entries in %v (%.1f/s), want at most %d (100/s): beats are not group-committed",
			entries, window.Round(time.Millisecond), float64(entries)/seconds, limit)
	}

	// Every beat was applied: each instance's last_beat_index is the
	// highest index its beats were acknowledged with.
	wantBeatIndex := make(map[string]uint64, instances)
	for _, b := range beats {
		for i, batch := range b.batches {
			var highest uint64
			for r := range rounds {
				highest = max(highest, b.resps[r][i].GetIndex())
			}
			for _, ref := range batch {
				wantBeatIndex[ref.GetService()+"/"+ref.GetId()] = highest
			}
		}
	}
	wrong := 0
	for s := range services {
		service := fmt.Sprintf("beat-%02d", s)
		resp, err := getService(t.Context(), leader, service, registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range resp.GetInstances() {
			key := service + "/" + in.GetId()
			if want := wantBeatIndex[key]; in.GetLastBeatIndex() != want {
				if wrong++; wrong <= 5 {
					t.Errorf("%s: last_beat_index %d, want %d (the highest index its beats were acknowledged with)", key, in.GetLastBeatIndex(), want)
				}
			}
			delete(wantBeatIndex, key)
		}
	}
	if wrong > 5 {
		t.Errorf("... and %d more instances with the wrong last_beat_index", wrong-5)
	}
	if len(wantBeatIndex) > 0 {
		t.Errorf("%d beaten instances missing from GetService", len(wantBeatIndex))
	}
}
