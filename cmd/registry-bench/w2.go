package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
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
// to the leader. Beside the nodes' CPU it reports the bench's own
// (getrusage), since the load generator shares the machine: when it takes
// a core's worth, it is the limit, not the cluster.
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
	leader, _ := c.leader(ctx, c.endpoints) // "" when unknown: no leader CPU figure
	nodes0 := c.sample()
	self0 := selfCPU()
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
					Address:     fmt.Sprintf("127.%d.%d.%d:8080", w, n>>8&255, n&255),
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
	self1 := selfCPU()
	nodes1 := c.sample()
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
	if len(nodes1) > 0 {
		var cpu time.Duration
		for pid, s1 := range nodes1 {
			cpu += s1.cpu - nodes0[pid].cpu
		}
		r.add("node_cpu_s_per_s", round2(cpu.Seconds()/elapsed.Seconds()))
		if p := c.node(leader); p != nil {
			pid := p.pid()
			r.add("leader_cpu_s_per_s", round2((nodes1[pid].cpu-nodes0[pid].cpu).Seconds()/elapsed.Seconds()))
		}
	}
	// The generator's own CPU, in cores, and as a share of the machine's
	// cores.
	bench := (self1 - self0).Seconds() / elapsed.Seconds()
	r.add("bench_cpu_s_per_s", round2(bench))
	r.add("bench_cpu_share_of_machine", round2(bench/float64(runtime.NumCPU())))
	b.rep.emit(r)
	return nil
}

// selfCPU is the user and system CPU time this process has used
// (getrusage RUSAGE_SELF), or 0 if it cannot be read.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
