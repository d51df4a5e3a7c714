package rpc

import (
	"context"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

// heldApplier holds every proposal until release is closed.
type heldApplier struct {
	entered chan struct{}
	release chan struct{}
}

func (a *heldApplier) Apply(ctx context.Context, _ fsm.Entry) (any, error) {
	a.entered <- struct{}{}
	select {
	case <-a.release:
		return &fsm.BeatResult{Index: 7}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestBeatBacklogIsTheAgeOfTheOldestBeatNotCommittedYet(t *testing.T) {
	ap := &heldApplier{entered: make(chan struct{}, 1), release: make(chan struct{})}
	s, cc := newTestConn(t, Config{NodeID: "n1", Applier: ap, Cluster: &fakeCluster{leader: true}, State: &fakeState{}})
	if b := s.BeatBacklog(); b != 0 {
		t.Fatalf("BeatBacklog with no beat received = %v, want 0", b)
	}
	before := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := registryv1.NewRegistryClient(cc).Beat(t.Context(), &registryv1.BeatRequest{
			Beats: []*registryv1.InstanceRef{{Service: "s", Id: "a", Incarnation: 1}}})
		done <- err
	}()
	<-ap.entered // proposed, not committed

	// The backlog grows while the batch waits for Raft.
	deadline := time.Now().Add(10 * time.Second)
	for s.BeatBacklog() < 20*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("BeatBacklog = %v with a beat held since before %v ago; want it to grow", s.BeatBacklog(), time.Since(before))
		}
		time.Sleep(time.Millisecond)
	}
	if b, most := s.BeatBacklog(), time.Since(before); b > most {
		t.Errorf("BeatBacklog = %v, more than the %v since the beat was sent", b, most)
	}
	close(ap.release)
	if err := <-done; err != nil {
		t.Fatalf("Beat: %v", err)
	}
	if b := s.BeatBacklog(); b != 0 {
		t.Errorf("BeatBacklog once the beat committed = %v, want 0", b)
	}
}
