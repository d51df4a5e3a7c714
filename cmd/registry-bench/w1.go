package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
)

// w1 measures liveness capacity. For each mode (batched: the client's
// default MaxBeatsPerFrame; single: one beat per frame; raw: the scale
// workload's generator instead of the Go client) it steps through
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
		case "batched", "raw":
		case "single":
			perFrame = 1
		default:
			return fmt.Errorf("--w1-modes: unknown mode %q (want batched, single, raw)", mode)
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

// perRawFrame is the beats per frame of W1's raw mode.
const perRawFrame = 1000

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
	// The load: the Go client's fleet (batched, single), or the raw
	// generator of the scale workload (raw: frames of 1000 beats built
	// once, one stream per client; its registrations are plain calls).
	var (
		fl     *fleet
		gen    *rawGen
		record func()
		stop   func() []weighted
		errsOf func() int64
	)
	if mode == "raw" {
		gen = newRawGen(c.endpoints, c.conn, n, perRawFrame, b.o.w1Clients, b.o.w1Interval, func(i int) *registryv1.InstanceRef {
			return &registryv1.InstanceRef{Service: fmt.Sprintf("w1-%d", i%b.o.w1Clients), Id: fmt.Sprintf("w1-%d", i), Incarnation: 1}
		})
		gen.start(ctx)
		defer gen.stop()
		record = gen.rec.record
		stop = gen.rec.stop
		errsOf = func() int64 { return gen.breaks() + gen.rec.rejected.Load() }
		fl = &fleet{logs: &clientLog{}}
	} else {
		f, err := newFleet(c.endpoints, b.o.w1Clients, perFrame)
		if err != nil {
			return false, err
		}
		defer f.close()
		fl = f
		record = fl.record
		stop = func() []weighted {
			acks, _ := fl.stop()
			out := make([]weighted, len(acks))
			for i, a := range acks {
				out[i] = weighted{a.lat, a.n}
			}
			return out
		}
		errsOf = func() int64 { return fl.logs.n.Load() }
	}
	wcl, err := client.New(clientConfig(client.Config{Endpoints: c.endpoints}))
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
	term0 := c.term(ctx)
	rstart := time.Now()
	rctx, cancel := context.WithTimeout(ctx, b.o.stepTimeout)
	defer cancel()
	if gen != nil {
		var regConns []*grpc.ClientConn
		for _, e := range c.endpoints {
			cc, cerr := c.conn(e)
			if cerr != nil {
				return false, cerr
			}
			regConns = append(regConns, cc)
		}
		err = registerRaw(rctx, regConns, n, b.o.regWorkers, func(i int) *registryv1.Instance {
			return &registryv1.Instance{Service: fmt.Sprintf("w1-%d", i%b.o.w1Clients), Id: fmt.Sprintf("w1-%d", i),
				Address: fmt.Sprintf("127.%d.%d.%d:80", i>>16&255, i>>8&255, i&255), Incarnation: 1,
				BeatInterval: durationpb.New(b.o.w1Interval), Ttl: durationpb.New(b.o.w1TTL)}
		}, func(i int) { gen.registered(i, perRawFrame) })
	} else {
		err = fl.registerAll(rctx, n, b.o.regWorkers, "w1", func(i int) string { return fmt.Sprintf("w1-%d", i%b.o.w1Clients) },
			client.WithBeatInterval(b.o.w1Interval), client.WithTTL(b.o.w1TTL))
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		r.add("verdict", "fail: registration: "+err.Error())
		b.rep.emit(r)
		return false, nil
	}
	r.addMs("registration_time", time.Since(rstart))
	udp, err := b.udpAlongside(ctx, c) // udp.go: UDP beats from here to the end of the hold, if asked
	if err != nil {
		return false, err
	}
	defer udp.stop()
	sleepCtx(ctx, 2*b.o.w1Interval)

	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return false, err
	}
	st0, err := c.status(ctx, leader)
	if err != nil {
		return false, err
	}
	// The leader's log growth (local nodes only: it reads their /metrics).
	var (
		entries0, bytes0 float64
		logErr           error = errNoLocalNode
	)
	if p := c.node(leader); p != nil {
		entries0, bytes0, logErr = proposed(ctx, p.httpAddr)
	}
	cpu0 := c.sample()
	self0, _ := readProcStat(os.Getpid())
	b.logf("W1 %s: holding %d instances for %v", mode, n, b.o.w1Hold)
	errs0 := errsOf()
	record()
	udp.begin()
	t0 := time.Now()
	prof := b.w1Profile(ctx, c, leader, mode, n)
	sleepCtx(ctx, b.o.w1Hold)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	samples := stop()
	udp.end(r)
	elapsed := time.Since(t0)
	termEnd := c.term(ctx)
	prof(r)
	cpu1 := c.sample()
	self1, _ := readProcStat(os.Getpid())
	st1, err := c.status(ctx, leader)
	if err != nil {
		return false, err
	}

	beats := 0
	var maxLat time.Duration
	for _, a := range samples {
		beats += a.n
		maxLat = max(maxLat, a.lat)
	}
	p50, p99 := weightedPercentile(samples, 0.5), weightedPercentile(samples, 0.99)
	errs := errsOf()
	expired := watch.expired.Load()

	r.add("beats_per_s", round1(float64(beats)/elapsed.Seconds()))
	r.add("beats_per_s_due", round1(float64(n)/b.o.w1Interval.Seconds()))
	r.add("frames", len(samples))
	r.addMs("beat_latency_p50", p50)
	r.addMs("beat_latency_p99", p99)
	r.addMs("beat_latency_max", maxLat)
	r.add("client_errors", errs)
	r.add("client_errors_during_hold", errs-errs0)
	r.add("false_expirations", expired)
	// Leader changes: Raft terms started since the first leader was
	// elected, over the step and over the hold (a node's term also grows
	// with an election that no one wins).
	r.add("leader_changes", termEnd-term0)
	r.add("leader_changes_during_hold", termEnd-st0.Term)
	r.add("raft_entries_per_s", round1(float64(st1.LastLogIndex-st0.LastLogIndex)/elapsed.Seconds()))
	if logErr == nil {
		var entries1, bytes1 float64
		if entries1, bytes1, logErr = proposed(ctx, c.node(leader).httpAddr); logErr == nil && entries1 > entries0 {
			r.add("raft_bytes_per_entry", round1((bytes1-bytes0)/(entries1-entries0)))
			r.add("raft_bytes_per_s", round1((bytes1-bytes0)/elapsed.Seconds()))
		}
	}
	if logErr != nil && logErr != errNoLocalNode {
		b.logf("W1 %s: the leader's log bytes: %v", mode, logErr)
	}
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
	case termEnd > st0.Term:
		why = fmt.Sprintf("%d leader changes during the hold", termEnd-st0.Term)
	}
	if why != "" {
		r.add("verdict", "fail: "+why)
	} else {
		r.add("verdict", "pass")
	}
	b.rep.emit(r)
	return why == "", nil
}

// term is the highest Raft term any reachable node reports (0 if none
// answers).
func (c *cluster) term(ctx context.Context) uint64 {
	var t uint64
	for _, e := range c.endpoints {
		if st, err := c.status(ctx, e); err == nil {
			t = max(t, st.Term)
		}
	}
	return t
}

// w1Profile starts, with --profile and a step chosen by
// --w1-profile-steps, the leader's CPU profile over most of the hold; the
// function it returns waits for it, takes a heap profile, adds both paths
// to r and prints how to read them. Without profiling it does nothing.
func (b *bench) w1Profile(ctx context.Context, c *cluster, leader, mode string, n int) func(*result) {
	nothing := func(*result) {}
	if b.o.profileDir == "" {
		return nothing
	}
	if steps := splitList(b.o.w1Profile); len(steps) > 0 && !slices.Contains(steps, strconv.Itoa(n)) {
		return nothing
	}
	p := c.node(leader)
	if p == nil {
		return nothing
	}
	pr := &profiler{dir: b.o.profileDir, hc: httpClient()}
	base := fmt.Sprintf("w1-%s-%d-leader-%s", mode, n, p.id)
	length := cpuProfileLength(b.o.w1Hold)
	var (
		cpuPath string
		cpuErr  error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		cpuPath, cpuErr = pr.fetch(ctx, p.httpAddr, fmt.Sprintf("profile?seconds=%d", int(length.Seconds())), base+"-cpu.pprof")
	}()
	b.logf("W1 %s %d: CPU profile of the leader %s for %v", mode, n, p.id, length)
	return func(r *result) {
		<-done
		heapPath, heapErr := pr.fetch(ctx, p.httpAddr, "heap?gc=1", base+"-heap.pprof")
		for _, x := range []struct {
			kind, path string
			err        error
			hint       string
		}{
			{"cpu", cpuPath, cpuErr, "go tool pprof -top -nodecount 30 %s"},
			{"heap", heapPath, heapErr, "go tool pprof -top -sample_index inuse_space %s  (-sample_index alloc_space: what the hold allocated)"},
		} {
			if x.err != nil {
				b.logf("W1 %s %d: %s profile: %v", mode, n, x.kind, x.err)
				r.add(x.kind+"_profile", "failed: "+x.err.Error())
				continue
			}
			b.logf("W1 %s %d: %s profile of the leader in %s; read it with: "+x.hint, mode, n, x.kind, x.path, x.path)
			r.add(x.kind+"_profile", x.path)
		}
	}
}
