package rpc

import (
	"context"
	"fmt"
	"testing"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

// encodingApplier answers a beat batch with no rejection; fsm.Propose has
// encoded the command, as for the node.
type encodingApplier struct{}

func (encodingApplier) Apply(context.Context, fsm.Entry) (any, error) {
	return &fsm.BeatResult{Index: 7}, nil
}

// BenchmarkFlushBeatsOnLeader10k is the leader's part of one group commit
// of 10,000 beats, up to the Raft proposal: build the BeatBatch command,
// encode it, and match the outcome back to the beats.
func BenchmarkFlushBeatsOnLeader10k(b *testing.B) {
	s, err := New(Config{NodeID: "n1", Applier: encodingApplier{}, Cluster: &fakeCluster{leader: true},
		State: &fakeState{changed: make(chan struct{})}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	refs := make([]beatItem, 10_000)
	for i := range refs {
		refs[i].ref = &registryv1.InstanceRef{Service: fmt.Sprintf("svc-%d", i%100), Id: fmt.Sprintf("inst-%d", i), Incarnation: 1}
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := s.flushBeats(b.Context(), refs)
		if err != nil || len(out) != len(refs) || out[0].index != 7 {
			b.Fatalf("flushBeats: %d outcomes, %v", len(out), err)
		}
	}
}
