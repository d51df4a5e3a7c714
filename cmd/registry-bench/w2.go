package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// w2 measures registration throughput: --w2-workers workers, each with one
// Register RPC outstanding at a time through the generated stubs (the
// client's Register would also start beating each instance), register new
// instances (TTL --w2-ttl, no beats) for --w2-duration. Worker i sends to
// endpoint i mod 3 over one connection per endpoint; a follower forwards
// to the leader.
func (b *bench) w2(ctx context.Context) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	conns := make([]*grpc.ClientConn, len(c.endpoints))
	for i, e := range c.endpoints {
		cc, err := grpc.NewClient(e, dialOptions()...)
		if err != nil {
			return err
		}
		defer cc.Close()
		conns[i] = cc
	}
	b.logf("W2: %d workers registering for %v", b.o.w2Workers, b.o.w2Duration)
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	wctx, cancel := context.WithTimeout(ctx, b.o.w2Duration)
	defer cancel()
	var (
		mu      sync.Mutex
		lats    []time.Duration
		errs    int
		lastErr error
		wg      sync.WaitGroup
	)
	start := time.Now()
	for w := range b.o.w2Workers {
		wg.Go(func() {
			stub := registryv1.NewRegistryClient(conns[w%len(conns)])
			var mine []time.Duration
			var myErrs int
			var myErr error
			for n := 0; wctx.Err() == nil; n++ {
				req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{
					Service:     fmt.Sprintf("w2-%d", w),
					Id:          fmt.Sprintf("w2-%s-%d-%d", run, w, n),
					Address:     fmt.Sprintf("10.%d.%d.%d:8080", w, n>>8&255, n&255),
					Incarnation: 1,
					Ttl:         durationpb.New(b.o.w2TTL),
				}}
				t := time.Now()
				// A call cut off by the end of the run is neither counted
				// nor an error.
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := stub.Register(cctx, req)
				ccancel()
				switch {
				case err == nil:
					mine = append(mine, time.Since(t))
				case ctx.Err() == nil:
					myErrs++
					myErr = err
					sleepCtx(wctx, 10*time.Millisecond) // no hot loop on a failing node
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			if myErr != nil {
				lastErr = myErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r := &result{Workload: "W2", Case: fmt.Sprintf("%d workers", b.o.w2Workers), Params: map[string]any{
		"workers": b.o.w2Workers, "duration_s": b.o.w2Duration.Seconds(), "ttl_s": b.o.w2TTL.Seconds(), "api": "raw Register RPC",
	}}
	r.add("registrations", len(lats))
	r.add("registrations_per_s", round1(float64(len(lats))/elapsed.Seconds()))
	r.addDist("latency", lats)
	r.add("errors", errs)
	if lastErr != nil {
		r.add("last_error", lastErr.Error())
	}
	b.rep.emit(r)
	return nil
}
