package harness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// fakeBeats is a node's Registry client for the Beater: it fails every
// call while down, otherwise acknowledges the beats, rejecting those named
// in unknown, and records every call it answered.
type fakeBeats struct {
	registryv1.RegistryClient // nil: only Beat is called
	down                      bool
	unknown                   map[string]bool

	mu    sync.Mutex
	calls [][]string // the ids of each acknowledged call
}

func (f *fakeBeats) Beat(_ context.Context, req *registryv1.BeatRequest, _ ...grpc.CallOption) (*registryv1.BeatResponse, error) {
	if f.down {
		return nil, status.Error(codes.Unavailable, "fake node is down")
	}
	resp := &registryv1.BeatResponse{Seq: req.GetSeq()}
	var ids []string
	for _, ref := range req.GetBeats() {
		ids = append(ids, ref.GetId())
		if f.unknown[ref.GetId()] {
			resp.Rejected = append(resp.Rejected, &registryv1.BeatRejection{Instance: ref, Reason: registryv1.BeatRejectReason_BEAT_REJECT_REASON_UNKNOWN})
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, ids)
	f.mu.Unlock()
	return resp, nil
}

// callsSince returns the calls answered after the first n.
func (f *fakeBeats) callsSince(n int) [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[min(n, len(f.calls)):])
}

func TestBeaterFailsOverHaltsAndResumes(t *testing.T) {
	const interval = 100 * time.Millisecond
	down := &fakeBeats{down: true}
	up := &fakeBeats{unknown: map[string]bool{"gone": true}}
	b := newBeater([]*Node{{id: "n1"}, {id: "n2"}}, BeaterOptions{Lanes: 1, Tick: 10 * time.Millisecond, RetryDelay: 5 * time.Millisecond})
	b.lanes[0].clients = []registryv1.RegistryClient{down, up}
	b.start()
	t.Cleanup(b.Stop)

	added := time.Now()
	instance := func(id string) *registryv1.Instance {
		return &registryv1.Instance{Service: "s", Id: id, Incarnation: 1, BeatInterval: durationpb.New(interval)}
	}
	b.Add(instance("alive"), instance("gone"))
	alive, gone := InstanceKey{"s", "alive"}, InstanceKey{"s", "gone"}

	// The lane starts on the node that is down and moves to the other.
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		r, _ := b.Record(alive)
		if r.Acks < 3 {
			return fmt.Errorf("%d beats of %s acknowledged, want 3", r.Acks, alive)
		}
		return nil
	})
	st := b.Stats()
	if st.FailedCalls < 1 || st.Failovers < 1 || st.Unknown < 1 || st.Fenced != 0 {
		t.Errorf("stats %+v: want at least one failed call, one failover and one UNKNOWN, no FENCED", st)
	}
	r, _ := b.Record(alive)
	if !r.LastAck.After(added) || r.Rejections != 0 {
		t.Errorf("record of %s: %+v", alive, r)
	}
	if r, _ := b.Record(gone); r.Acks != 0 || r.Rejections < 1 || r.LastRejection != registryv1.BeatRejectReason_BEAT_REJECT_REASON_UNKNOWN {
		t.Errorf("record of %s, rejected as UNKNOWN: %+v", gone, r)
	}

	// Halted, an instance is left out of every later call; the other one
	// is still beaten.
	b.Halt(alive)
	r, _ = b.Record(alive)
	// A call in flight when Halt returned may still carry it: skip one.
	from := len(up.callsSince(0)) + 1
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if n := len(up.callsSince(from)); n < 3 {
			return fmt.Errorf("%d calls since the halt, want 3", n)
		}
		return nil
	})
	for _, call := range up.callsSince(from) {
		if slices.Contains(call, "alive") {
			t.Fatalf("a halted instance was beaten: call %v", call)
		}
	}
	if now, _ := b.Record(alive); !now.Halted || now.Acks > r.Acks+1 {
		t.Errorf("halted %s: record %+v, %d acks when halted", alive, now, r.Acks)
	}

	b.Resume(alive)
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		now, _ := b.Record(alive)
		if now.Halted || now.Acks <= r.Acks+1 {
			return errors.New("not beaten since it resumed")
		}
		return nil
	})
	b.Stop()
	b.Stop() // idempotent
}
