package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/regcenter/registry/client"
)

// w1 measures liveness capacity. For each mode (batched: the client's
// default MaxBeatsPerFrame; single: one beat per frame) it steps through
// --w1-steps: on a fresh cluster, N instances (a beat every --w1-interval,
// TTL --w1-ttl) spread over --w1-clients clients, measured for --w1-hold
// once every instance is registered and has beaten twice. A step fails on
// a beat latency p99 above --w1-max-p99, a client error or an expiry; the
// last good N is the capacity.
func (b *bench) w1(ctx context.Context) error {
	var steps []int
	for _, s := range splitList(b.o.w1Steps) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("--w1-steps: %q is not a positive count", s)
		}
		steps = append(steps, n)
	}
	for _, mode := range splitList(b.o.w1Modes) {
		perFrame := 0
		switch mode {
		case "batched":
		case "single":
			perFrame = 1
		default:
			return fmt.Errorf("--w1-modes: unknown mode %q (want batched, single)", mode)
		}
		capacity := 0
		for _, n := range steps {
			ok, err := b.w1Step(ctx, mode, perFrame, n)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			capacity = n
		}
		r := &result{Workload: "W1", Case: mode + " capacity", Params: map[string]any{"steps": b.o.w1Steps, "max_p99_ms": ms(b.o.w1MaxP99), "hold_s": b.o.w1Hold.Seconds()}}
		r.add("capacity_instances", capacity)
		if capacity == steps[len(steps)-1] {
			r.add("note", "every step passed: the capacity is at least this")
		}
		b.rep.emit(r)
	}
	return nil
}

// nodeSample is the nodes' CPU and memory at one moment.
type nodeSample map[int]procStat // pid →

func (c *cluster) sample() nodeSample {
	s := nodeSample{}
	for _, p := range c.nodes {
		if pid := p.pid(); pid != 0 {
			if st, err := readProcStat(pid); err == nil {
				s[pid] = st
			}
		}
	}
	return s
}

// w1Step runs one step; ok reports whether it passed.
func (b *bench) w1Step(ctx context.Context, mode string, perFrame, n int) (ok bool, err error) {
	c, err := b.cluster(ctx)
	if err != nil {
		return false, err
	}
	defer c.close()
	fl, err := newFleet(c.endpoints, b.o.w1Clients, perFrame)
	if err != nil {
		return false, err
	}
	defer fl.close()
	wcl, err := client.New(client.Config{Endpoints: c.endpoints})
	if err != nil {
		return false, err
	}
	defer wcl.Close()
	watch, err := watchExpiries(ctx, wcl, "")
	if err != nil {
		return false, err
	}
	defer watch.stop()

	r := &result{Workload: "W1", Case: fmt.Sprintf("%s %d", mode, n), Params: map[string]any{
		"mode": mode, "instances": n, "clients": b.o.w1Clients, "hold_s": b.o.w1Hold.Seconds(),
		"ttl_s": b.o.w1TTL.Seconds(), "interval_s": b.o.w1Interval.Seconds(),
	}}
	b.logf("W1 %s: registering %d instances", mode, n)
	rstart := time.Now()
	rctx, cancel := context.WithTimeout(ctx, b.o.stepTimeout)
	defer cancel()
	err = fl.registerAll(rctx, n, b.o.regWorkers, "w1", func(i int) string { return fmt.Sprintf("w1-%d", i%b.o.w1Clients) },
		client.WithBeatInterval(b.o.w1Interval), client.WithTTL(b.o.w1TTL))
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		r.add("verdict", "fail: registration: "+err.Error())
		b.rep.emit(r)
		return false, nil
	}
	r.addMs("registration_time", time.Since(rstart))
	sleepCtx(ctx, 2*b.o.w1Interval)

	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return false, err
	}
	st0, err := c.status(ctx, leader)
	if err != nil {
		return false, err
	}
	cpu0 := c.sample()
	self0, _ := readProcStat(os.Getpid())
	b.logf("W1 %s: holding %d instances for %v", mode, n, b.o.w1Hold)
	errs0 := fl.logs.n.Load()
	fl.record()
	t0 := time.Now()
	sleepCtx(ctx, b.o.w1Hold)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	acks, _ := fl.stop()
	elapsed := time.Since(t0)
	cpu1 := c.sample()
	self1, _ := readProcStat(os.Getpid())
	st1, err := c.status(ctx, leader)
	if err != nil {
		return false, err
	}

	beats := 0
	samples := make([]weighted, len(acks))
	var maxLat time.Duration
	for i, a := range acks {
		beats += a.n
		samples[i] = weighted{a.lat, a.n}
		maxLat = max(maxLat, a.lat)
	}
	p50, p99 := weightedPercentile(samples, 0.5), weightedPercentile(samples, 0.99)
	errs := fl.logs.n.Load()
	expired := watch.expired.Load()

	r.add("beats_per_s", round1(float64(beats)/elapsed.Seconds()))
	r.add("beats_per_s_due", round1(float64(n)/b.o.w1Interval.Seconds()))
	r.add("frames", len(acks))
	r.addMs("beat_latency_p50", p50)
	r.addMs("beat_latency_p99", p99)
	r.addMs("beat_latency_max", maxLat)
	r.add("client_errors", errs)
	r.add("client_errors_during_hold", errs-errs0)
	r.add("false_expirations", expired)
	r.add("raft_entries_per_s", round1(float64(st1.LastLogIndex-st0.LastLogIndex)/elapsed.Seconds()))
	if len(cpu1) > 0 {
		var cpu time.Duration
		var rssMax int64
		for pid, s1 := range cpu1 {
			cpu += s1.cpu - cpu0[pid].cpu
			rssMax = max(rssMax, s1.rss)
		}
		r.add("node_cpu_s", round2(cpu.Seconds()))
		r.add("node_cpu_s_per_s", round2(cpu.Seconds()/elapsed.Seconds()))
		if p := c.node(leader); p != nil {
			pid := p.pid()
			r.add("leader_cpu_s_per_s", round2((cpu1[pid].cpu-cpu0[pid].cpu).Seconds()/elapsed.Seconds()))
			r.add("leader_rss_mib", cpu1[pid].rss>>20)
		}
		r.add("max_node_rss_mib", rssMax>>20)
	}
	// The bench's own CPU: it shares the machine with the nodes.
	r.add("bench_cpu_s_per_s", round2((self1.cpu-self0.cpu).Seconds()/elapsed.Seconds()))
	var why string
	switch {
	case beats == 0:
		why = "no beat acknowledged"
	case p99 > b.o.w1MaxP99:
		why = fmt.Sprintf("p99 %v > %v", p99.Round(time.Millisecond), b.o.w1MaxP99)
	case errs > 0:
		why = fmt.Sprintf("%d client errors (first: %v)", errs, fl.logs.messages())
	case expired > 0:
		why = fmt.Sprintf("%d instances expired", expired)
	}
	if why != "" {
		r.add("verdict", "fail: "+why)
	} else {
		r.add("verdict", "pass")
	}
	b.rep.emit(r)
	return why == "", nil
}
