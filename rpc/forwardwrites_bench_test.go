package rpc

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/metadata"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// benchLeader serves a leader over a real FSM on an in-memory listener
// and returns a client that calls it as a follower does (marked
// forwarded).
func benchLeader(b *testing.B) (registryv1.RegistryClient, context.Context) {
	b.Helper()
	rep := fsmtest.NewReplica(b)
	_, cc := newTestConn(b, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM})
	return registryv1.NewRegistryClient(cc), metadata.AppendToOutgoingContext(b.Context(), forwardedKey, "n2")
}

// forwardBatch is the writes a follower gathers per forwarded call in the
// benchmarks: 64 concurrent callers.
const forwardBatch = 64

// BenchmarkLeaderTakesForwardedRegistersOneCallEach is the leader's cost
// of a forwarded registration as followers forwarded them before: one
// Register call each, 64 at a time. One op is one registration.
func BenchmarkLeaderTakesForwardedRegistersOneCallEach(b *testing.B) {
	client, ctx := benchLeader(b)
	var mu sync.Mutex
	n := 0
	b.ReportAllocs()
	b.SetParallelism(forwardBatch)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := n
			mu.Unlock()
			if _, err := client.Register(ctx, regRequest("orders", fmt.Sprintf("i%d", id), 1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLeaderTakesForwardedRegistersInOneCall is the same work in
// ForwardWrites calls of 64 registrations. One op is one registration.
func BenchmarkLeaderTakesForwardedRegistersInOneCall(b *testing.B) {
	client, ctx := benchLeader(b)
	req := &registryv1.ForwardWritesRequest{Writes: make([]*registryv1.ForwardedWrite, forwardBatch)}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		if n%forwardBatch == 0 && n > 0 {
			forwardCall(b, client, ctx, req)
		}
		req.Writes[n%forwardBatch] = &registryv1.ForwardedWrite{Op: &registryv1.ForwardedWrite_Register{Register: regRequest("orders", fmt.Sprintf("i%d", n), 1)}}
		n++
	}
	req.Writes = req.Writes[:(n-1)%forwardBatch+1]
	forwardCall(b, client, ctx, req)
}

func forwardCall(b *testing.B, client registryv1.RegistryClient, ctx context.Context, req *registryv1.ForwardWritesRequest) {
	resp, err := client.ForwardWrites(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range resp.Results {
		if r.GetRegister() == nil {
			b.Fatalf("a forwarded registration failed: %v", r)
		}
	}
}
