package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// scaleOptions are the scale workload's flags.
type scaleOptions struct {
	instances    int
	services     int
	interval     time.Duration
	ttl          time.Duration
	hold         time.Duration
	observe      time.Duration
	regWorkers   int
	regConns     int
	streams      int
	frameBeats   int
	phaseTimeout time.Duration
	regTimeout   time.Duration
	nodeFlags    string
	skip         string
	registerVia  string
}

func scaleFlags(fs *flag.FlagSet, o *scaleOptions) {
	fs.IntVar(&o.instances, "scale-instances", 1_000_000, "scale: instances")
	fs.IntVar(&o.services, "scale-services", 100, "scale: services the instances are spread over")
	fs.DurationVar(&o.interval, "scale-interval", 10*time.Second, "scale: beat interval of every instance")
	fs.DurationVar(&o.ttl, "scale-ttl", 30*time.Second, "scale: TTL (at least 3 intervals)")
	fs.DurationVar(&o.hold, "scale-hold", 60*time.Second, "scale: how long the beating fleet is measured")
	fs.DurationVar(&o.observe, "scale-observe", 0, "scale: how long after the leader kill to keep beating and watching for expirations (0: the TTL)")
	fs.IntVar(&o.regWorkers, "scale-register-workers", 2048, "scale: registrations in flight")
	fs.IntVar(&o.regConns, "scale-conns", 6, "scale: gRPC connections the registrations and beat streams are spread over (round-robin over the nodes)")
	fs.StringVar(&o.registerVia, "scale-register-via", "leader", "scale: send the registrations to the leader, or to all the nodes (followers forward them)")
	fs.IntVar(&o.streams, "scale-streams", 6, "scale: beat streams")
	fs.IntVar(&o.frameBeats, "scale-frame-beats", 1000, "scale: beats per frame")
	fs.DurationVar(&o.regTimeout, "scale-register-timeout", 8*time.Minute, "scale: bound on registering the instances (the run stops there, with how many were registered, if they were not all)")
	fs.DurationVar(&o.phaseTimeout, "scale-phase-timeout", 3*time.Minute, "scale: bound on each later phase (a catch-up, a restart)")
	fs.StringVar(&o.nodeFlags, "scale-node-flags", "--snapshot-interval 10s --snapshot-threshold 8192 --trailing-logs 1024", "scale: flags for the local nodes (before --node-flags): a snapshot every 8,192 entries, as README advises at a million instances (the default 1,024 takes one every 10-20 s there, and the beat p99 doubles), checked often enough to happen in the run, and a log short enough that a new node catches up by snapshot")
	fs.StringVar(&o.skip, "scale-skip", "", "scale: phases to skip, comma-separated (snapshot, join, kill, restart)")
}

// scale is the million-instance workload (issue 16, item 4): see
// docs/benchmarks.md. Three local nodes; --scale-instances registered
// fast and beaten every --scale-interval by the raw generator (rawbeat.go)
// through one snapshot, a fourth node's join, a leader kill and a full
// restart.
func (b *bench) scale(ctx context.Context) error {
	o := b.o.scale
	if b.o.endpoints != "" {
		b.logf("scale: skipped: it starts, kills and restarts nodes (no --endpoints)")
		return nil
	}
	if o.ttl < 3*o.interval {
		return fmt.Errorf("--scale-ttl %v: at least 3 × --scale-interval (%v)", o.ttl, o.interval)
	}
	if o.instances < 1 || o.services < 1 || o.frameBeats < 1 || o.regConns < 1 || o.regWorkers < 1 {
		return errors.New("--scale-instances, -services, -frame-beats, -conns and -register-workers must be positive")
	}
	skip := splitList(o.skip)
	observe := o.observe
	if observe == 0 {
		observe = o.ttl
	}
	r := &result{Workload: "SCALE", Case: fmt.Sprintf("%d instances", o.instances), Params: map[string]any{
		"instances": o.instances, "services": o.services, "interval_s": o.interval.Seconds(), "ttl_s": o.ttl.Seconds(),
		"hold_s": o.hold.Seconds(), "streams": o.streams, "frame_beats": o.frameBeats, "register_workers": o.regWorkers, "register_via": o.registerVia,
		"node_flags": o.nodeFlags,
	}}
	defer b.rep.emit(r)

	c, err := b.cluster(ctx, strings.Fields(o.nodeFlags)...)
	if err != nil {
		return err
	}
	defer c.close()
	term0 := c.term(ctx)
	base := c.sample()
	for _, p := range c.nodes {
		r.add("rss_base_mib_"+p.id, base[p.pid()].rss>>20)
	}

	// Connections shared by the registrations and the beat streams.
	conns := make([]*grpc.ClientConn, o.regConns)
	for i := range conns {
		cc, err := grpc.NewClient(c.endpoints[i%len(c.endpoints)], dialOptions()...)
		if err != nil {
			return err
		}
		defer cc.Close()
		conns[i] = cc
	}
	var connNext atomic.Int64
	byAddr := map[string][]*grpc.ClientConn{}
	for i, cc := range conns {
		a := c.endpoints[i%len(c.endpoints)]
		byAddr[a] = append(byAddr[a], cc)
	}
	connFor := func(addr string) (*grpc.ClientConn, error) {
		if ccs := byAddr[addr]; len(ccs) > 0 {
			return ccs[int(connNext.Add(1))%len(ccs)], nil
		}
		return c.conn(addr)
	}

	service := func(i int) string { return fmt.Sprintf("scale-%d", i%o.services) }
	id := func(i int) string { return fmt.Sprintf("i%07d", i) }
	gen := newRawGen(c.endpoints, connFor, o.instances, o.frameBeats, o.streams, o.interval,
		func(i int) *registryv1.InstanceRef {
			return &registryv1.InstanceRef{Service: service(i), Id: id(i), Incarnation: 1}
		})
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	gen.start(gctx)
	defer gen.stop()

	// Register, beating each frame from the moment all of it is registered.
	b.logf("scale: registering %d instances (%d in flight, %d connections)", o.instances, o.regWorkers, len(conns))
	rstart := time.Now()
	regConns := conns
	switch o.registerVia {
	case "all":
	case "leader":
		l, err := c.waitLeader(ctx, c.endpoints)
		if err != nil {
			return err
		}
		regConns = nil
		for range len(conns) {
			cc, err := grpc.NewClient(l, dialOptions()...)
			if err != nil {
				return err
			}
			defer cc.Close()
			regConns = append(regConns, cc)
		}
	default:
		return fmt.Errorf("--scale-register-via %q: want leader or all", o.registerVia)
	}
	rctx, rcancel := context.WithTimeout(ctx, o.regTimeout)
	regCPU0 := c.sample()
	var registered atomic.Int64
	err = registerRaw(rctx, regConns, o.instances, o.regWorkers, func(i int) *registryv1.Instance {
		return &registryv1.Instance{Service: service(i), Id: id(i), Address: fmt.Sprintf("127.%d.%d.%d:80", i>>16&255, i>>8&255, i&255),
			Incarnation: 1, BeatInterval: durationpb.New(o.interval), Ttl: durationpb.New(o.ttl)}
	}, func(i int) {
		gen.registered(i, o.frameBeats)
		registered.Add(1)
	})
	rcancel()
	regTime := time.Since(rstart)
	regCPU1 := c.sample()
	var regCPU time.Duration
	for _, p := range c.nodes {
		pid := p.pid()
		regCPU += regCPU1[pid].cpu - regCPU0[pid].cpu
		r.add("registration_cpu_s_per_s_"+p.id, round2((regCPU1[pid].cpu-regCPU0[pid].cpu).Seconds()/regTime.Seconds()))
	}
	r.add("registration_node_cpu_s_per_s", round2(regCPU.Seconds()/regTime.Seconds()))
	// What the leader's Apply took lately (go-metrics' summary: about the
	// last minute), and the registrations per Raft entry.
	if l, err := c.waitLeader(ctx, c.endpoints); err == nil {
		if m, err := metrics(ctx, c.node(l).httpAddr, "raft_fsm_apply_seconds{", "registry_write_batch_size_writes_"); err == nil {
			for _, q := range []struct{ q, name string }{{"0.5", "p50"}, {"0.99", "p99"}} {
				if v, ok := m[`raft_fsm_apply_seconds{quantile="`+q.q+`"}`]; ok && v == v {
					r.add("registration_fsm_apply_"+q.name+"_ms", round1(v*1000))
				}
			}
			if n := m["registry_write_batch_size_writes_count"]; n > 0 {
				r.add("registrations_per_entry", round1(m["registry_write_batch_size_writes_sum"]/n))
			}
		}
	}
	if err != nil {
		n := registered.Load()
		r.add("registered", n)
		r.add("registrations_per_s", round1(float64(n)/regTime.Seconds()))
		r.add("leader_changes", c.term(ctx)-term0)
		r.add("expired_counted_by_nodes", c.maxMetric(ctx, `registry_deregistrations_total{reason="expired"}`))
		r.add("verdict", "fail: registration: "+err.Error())
		b.logf("scale: registration stopped after %v with %d registered (%.0f/s): %v", regTime.Round(time.Millisecond), n, float64(n)/regTime.Seconds(), err)
		return nil
	}
	r.addMs("registration_time", regTime)
	r.add("registrations_per_s", round1(float64(o.instances)/regTime.Seconds()))
	b.logf("scale: registered %d instances in %v: %.0f registrations/s", o.instances, regTime.Round(time.Millisecond), float64(o.instances)/regTime.Seconds())

	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	st, err := c.status(ctx, leader)
	if err != nil {
		return err
	}
	// Count expirations from here on: a watch of every service resuming
	// after the current index (no reset of a million instances), and the
	// nodes' own counters as a cross-check.
	ew := watchRaw(ctx, c, st.AppliedIndex)
	defer ew.stop()
	expired0 := c.maxMetric(ctx, `registry_deregistrations_total{reason="expired"}`)

	// Every frame answered once: the fleet is beating.
	if err := waitFor(ctx, o.phaseTimeout, func(context.Context) error {
		if !gen.allAcked() {
			return errors.New("not every frame answered yet")
		}
		return nil
	}); err != nil {
		// Measure on: the figures say what the fleet lost.
		unanswered := 0
		for _, f := range gen.frames {
			if !f.acked.Load() {
				unanswered++
			}
		}
		r.add("frames_never_answered", unanswered)
		b.logf("scale: %d of %d frames not answered within %v; holding all the same: %v", unanswered, len(gen.frames), o.phaseTimeout, err)
	}

	// Hold.
	b.logf("scale: holding %d instances beating every %v for %v", o.instances, o.interval, o.hold)
	cpu0 := c.sample()
	self0, _ := readProcStat(os.Getpid())
	holdTerm := c.term(ctx)
	rej0, retry0 := gen.rec.rejected.Load(), gen.rec.retried.Load()
	gen.rec.record()
	t0 := time.Now()
	sleepCtx(ctx, o.hold)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	samples := gen.rec.stop()
	elapsed := time.Since(t0)
	if slow := gen.rec.slowBySecond(t0); len(slow) > 0 {
		b.logf("scale: frames answered after %v, by the second of the hold they were sent in (from %s): %s",
			slowFrameAfter, t0.Format("15:04:05.000"), strings.Join(slow, ", "))
	}
	cpu1 := c.sample()
	self1, _ := readProcStat(os.Getpid())
	beats := 0
	var maxLat time.Duration
	for _, s := range samples {
		beats += s.n
		maxLat = max(maxLat, s.lat)
	}
	p50, p99 := weightedPercentile(samples, 0.5), weightedPercentile(samples, 0.99)
	r.add("beats_per_s", round1(float64(beats)/elapsed.Seconds()))
	r.add("beats_per_s_due", round1(float64(o.instances)/o.interval.Seconds()))
	r.addMs("beat_latency_p50", p50)
	r.addMs("beat_latency_p99", p99)
	r.addMs("beat_latency_max", maxLat)
	r.addWeightedDist("beat_latency", samples)
	r.add("beats_rejected_during_hold", gen.rec.rejected.Load()-rej0)
	r.add("beats_retried_during_hold", gen.rec.retried.Load()-retry0)
	r.add("leader_changes_during_hold", c.term(ctx)-holdTerm)
	var nodeCPU time.Duration
	for _, p := range c.nodes {
		pid := p.pid()
		s0, s1 := cpu0[pid], cpu1[pid]
		nodeCPU += s1.cpu - s0.cpu
		r.add("rss_mib_"+p.id, s1.rss>>20)
		r.add("bytes_per_instance_"+p.id, (s1.rss-base[pid].rss)/int64(o.instances))
		r.add("cpu_s_per_s_"+p.id, round2((s1.cpu-s0.cpu).Seconds()/elapsed.Seconds()))
	}
	r.add("node_cpu_s_per_s", round2(nodeCPU.Seconds()/elapsed.Seconds()))
	r.add("bench_cpu_s_per_s", round2((self1.cpu-self0.cpu).Seconds()/elapsed.Seconds()))
	b.logf("scale: hold: %.0f beats/s (due %.0f), latency p50 %v p99 %v max %v; nodes %.2f CPU s/s, bench %.2f CPU s/s",
		float64(beats)/elapsed.Seconds(), float64(o.instances)/o.interval.Seconds(), p50.Round(time.Millisecond), p99.Round(time.Millisecond),
		maxLat.Round(time.Millisecond), nodeCPU.Seconds()/elapsed.Seconds(), (self1.cpu-self0.cpu).Seconds()/elapsed.Seconds())
	for _, p := range c.nodes {
		pid := p.pid()
		b.logf("scale: %s: RSS %d MiB (base %d MiB): %d bytes per instance beyond the base", p.id, cpu1[pid].rss>>20, base[pid].rss>>20, (cpu1[pid].rss-base[pid].rss)/int64(o.instances))
	}

	if !slices.Contains(skip, "snapshot") {
		if err := b.scaleSnapshot(ctx, c, leader, r); err != nil {
			b.logf("scale: snapshot: %v", err)
			r.add("snapshot_error", err.Error())
		}
	}
	if !slices.Contains(skip, "join") {
		if err := b.scaleJoin(ctx, c, r); err != nil {
			b.logf("scale: join: %v", err)
			r.add("join_error", err.Error())
		}
	}
	if !slices.Contains(skip, "kill") {
		if err := b.scaleKill(ctx, c, gen, observe, r); err != nil {
			b.logf("scale: leader kill: %v", err)
			r.add("kill_error", err.Error())
		}
	}
	// Expirations over everything up to now (the restart stops the
	// beating; what expires after it is not a false expiration of the
	// fleet under test).
	// The watch may trail the nodes (it reads every SUSPECT mark too):
	// register a sentinel and let the watch read up to it before counting.
	if err := b.scaleWatchCatchUp(ctx, c, ew, &o); err != nil {
		r.add("watch_behind", err.Error())
		b.logf("scale: %v: the watched count may be short", err)
	}
	r.add("false_expirations_watched", ew.expired.Load())
	r.add("watch_resets", ew.resets.Load())
	r.add("watch_events", ew.events.Load())
	r.add("watch_breaks", ew.breaks.Load())
	if e, ok := ew.lastErr.Load().(string); ok {
		b.logf("scale: the expiry watch broke %d times; the last: %s", ew.breaks.Load(), e)
	}
	r.add("expired_counted_by_nodes", c.maxMetric(ctx, `registry_deregistrations_total{reason="expired"}`)-expired0)
	r.add("beats_rejected_total", gen.rec.rejected.Load())
	r.add("beat_stream_breaks", gen.breaks())
	for what, n := range gen.reasons() {
		b.logf("scale: generator: %s: %d", what, n)
	}
	r.add("leader_changes", c.term(ctx)-term0)
	b.logf("scale: false expirations: %d (watched; %d watch resets), %d counted by the nodes; leader changes %d (one is the kill's)",
		ew.expired.Load(), ew.resets.Load(), c.maxMetric(ctx, `registry_deregistrations_total{reason="expired"}`)-expired0, c.term(ctx)-term0)

	if !slices.Contains(skip, "restart") {
		ew.stop()
		gen.stop()
		if err := b.scaleRestart(ctx, c, r); err != nil {
			b.logf("scale: restart: %v", err)
			r.add("restart_error", err.Error())
		}
	}
	verdict := "pass"
	switch {
	case ew.expired.Load() > 0:
		verdict = fmt.Sprintf("fail: %d false expirations", ew.expired.Load())
	case p99 > 100*time.Millisecond:
		verdict = fmt.Sprintf("fail: beat p99 %v > 100ms", p99.Round(time.Millisecond))
	}
	r.add("verdict", verdict)
	return nil
}

// waitFor polls cond for at most d.
func waitFor(ctx context.Context, d time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return poll.Until(ctx, cond)
}

// registerRaw registers n instances (inst(i)) over conns with workers
// calls in flight, retrying UNAVAILABLE and RESOURCE_EXHAUSTED answers
// until ctx ends; done(i) follows each success.
func registerRaw(ctx context.Context, conns []*grpc.ClientConn, n, workers int, inst func(int) *registryv1.Instance, done func(int)) error {
	var next atomic.Int64
	stubs := make([]registryv1.RegistryClient, len(conns))
	for i, cc := range conns {
		stubs[i] = registryv1.NewRegistryClient(cc)
	}
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || gctx.Err() != nil {
					return nil
				}
				req := &registryv1.RegisterRequest{Instance: inst(i)}
				for attempt := 0; ; attempt++ {
					cctx, ccancel := context.WithTimeout(gctx, 10*time.Second)
					_, err := stubs[(w+attempt)%len(stubs)].Register(cctx, req)
					ccancel()
					if err == nil {
						done(i)
						break
					}
					if c := status.Code(err); (c == codes.Unavailable || c == codes.ResourceExhausted || c == codes.DeadlineExceeded) && gctx.Err() == nil {
						sleepCtx(gctx, min(time.Duration(attempt+1)*20*time.Millisecond, 500*time.Millisecond))
						continue
					}
					return fmt.Errorf("registering %s/%s: %w", req.Instance.Service, req.Instance.Id, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// rawWatch counts the EXPIRED events of a watch of every service, on
// whichever node answers, resuming after the last index it saw.
type rawWatch struct {
	expired, resets atomic.Int64
	events, breaks  atomic.Int64  // every event seen; streams that failed or could not open
	index           atomic.Uint64 // the index the watch has read up to
	lastErr         atomic.Value  // string: the last stream's error
	cancel          context.CancelFunc
	done            chan struct{}
	once            sync.Once
}

func watchRaw(ctx context.Context, c *cluster, after uint64) *rawWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &rawWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for attempt := 0; ctx.Err() == nil; attempt++ {
			cc, err := c.conn(c.endpoints[attempt%len(c.endpoints)])
			if err == nil {
				var st grpc.ServerStreamingClient[registryv1.WatchResponse]
				st, err = registryv1.NewRegistryClient(cc).Watch(ctx, &registryv1.WatchRequest{AfterIndex: after})
				for err == nil {
					var resp *registryv1.WatchResponse
					if resp, err = st.Recv(); err != nil {
						break
					}
					if resp.IsReset && !resp.More {
						w.resets.Add(1)
					}
					w.events.Add(int64(len(resp.Events)))
					for _, ev := range resp.Events {
						if ev.Type == registryv1.EventType_EVENT_TYPE_EXPIRED {
							w.expired.Add(1)
						}
					}
					after = max(after, resp.Index)
					w.index.Store(after)
				}
			}
			if ctx.Err() == nil {
				w.breaks.Add(1)
				w.lastErr.Store(err.Error())
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}()
	return w
}

// scaleWatchCatchUp registers a sentinel instance, waits until the expiry
// watch has read its registration (and so everything before it), and
// deregisters it.
func (b *bench) scaleWatchCatchUp(ctx context.Context, c *cluster, ew *rawWatch, o *scaleOptions) error {
	l, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	cc, err := c.conn(l)
	if err != nil {
		return err
	}
	rc := registryv1.NewRegistryClient(cc)
	resp, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "scale-sentinel", Id: "s", Address: "127.0.0.1:1", Incarnation: 1,
		BeatInterval: durationpb.New(o.interval), Ttl: durationpb.New(o.ttl)}})
	if err != nil {
		return fmt.Errorf("registering the sentinel: %w", err)
	}
	defer rc.Deregister(ctx, &registryv1.DeregisterRequest{Service: "scale-sentinel", Id: "s"})
	return waitFor(ctx, o.phaseTimeout, func(context.Context) error {
		if got := ew.index.Load(); got < resp.Index {
			return fmt.Errorf("the expiry watch read up to %d, the sentinel is at %d", got, resp.Index)
		}
		return nil
	})
}

func (w *rawWatch) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

// metrics reads the samples of a node's /metrics whose series (name and
// labels, as printed) start with one of prefixes.
func metrics(ctx context.Context, httpAddr string, prefixes ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL(httpAddr, "/metrics"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", httpAddr, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				sp := strings.LastIndexByte(line, ' ')
				if v, err := strconv.ParseFloat(line[sp+1:], 64); err == nil {
					out[line[:sp]] = v
				}
				break
			}
		}
	}
	return out, sc.Err()
}

// maxMetric is the highest value of one series over the nodes that
// answer.
func (c *cluster) maxMetric(ctx context.Context, series string) int64 {
	var v float64
	for _, p := range c.nodes {
		if m, err := metrics(ctx, p.httpAddr, series); err == nil {
			v = max(v, m[series])
		}
	}
	return int64(v)
}

// scaleSnapshot times a backup (Cluster.SnapshotSave through the leader)
// and reports the Raft snapshots the nodes took so far: how many, how long
// the fsm's point-in-time copy (the Apply stall) and the persisting took,
// and the size of the newest on disk.
func (b *bench) scaleSnapshot(ctx context.Context, c *cluster, leader string, r *result) error {
	cc, err := c.conn(leader)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, b.o.scale.phaseTimeout)
	defer cancel()
	t := time.Now()
	st, err := registryv1.NewClusterClient(cc).SnapshotSave(sctx, &registryv1.SnapshotSaveRequest{})
	if err != nil {
		return err
	}
	var size, instances int64
	for {
		ch, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		size += int64(len(ch.Data))
		if ch.Instances > 0 {
			instances = int64(ch.Instances)
		}
	}
	d := time.Since(t)
	r.addMs("backup_time", d)
	r.add("backup_mib", round1(float64(size)/(1<<20)))
	r.add("backup_instances", instances)
	b.logf("scale: backup (SnapshotSave) of %d instances: %v, %.1f MiB", instances, d.Round(time.Millisecond), float64(size)/(1<<20))

	p := c.node(leader)
	if p == nil {
		return nil
	}
	m, err := metrics(ctx, p.httpAddr, "raft_fsm_snapshot_seconds", "raft_snapshot_create_seconds", "raft_snapshot_persist_seconds", "raft_snapshot_takeSnapshot_seconds", "registry_raft_last_snapshot_index")
	if err != nil {
		return err
	}
	for _, name := range []string{"raft_fsm_snapshot", "raft_snapshot_persist", "raft_snapshot_takeSnapshot"} {
		n, sum := m[name+"_seconds_count"], m[name+"_seconds_sum"]
		r.add(name+"_count", n)
		if n > 0 {
			r.add(name+"_mean_ms", round1(sum/n*1000))
		}
		// The summary's quantiles cover the last minute's samples.
		if q, ok := m[name+`_seconds{quantile="0.99"}`]; ok && q == q {
			r.add(name+"_p99_ms", round1(q*1000))
		}
	}
	snapBytes := newestSnapshotBytes(filepath.Join(c.dir, p.id))
	r.add("raft_snapshot_mib", round1(float64(snapBytes)/(1<<20)))
	b.logf("scale: Raft snapshots on the leader %s: %v taken; fsm point-in-time copy (Apply stall) mean %.1f ms; persist mean %.0f ms; newest %.1f MiB on disk",
		p.id, m["raft_fsm_snapshot_seconds_count"], 1000*m["raft_fsm_snapshot_seconds_sum"]/max(1, m["raft_fsm_snapshot_seconds_count"]),
		1000*m["raft_snapshot_persist_seconds_sum"]/max(1, m["raft_snapshot_persist_seconds_count"]), float64(snapBytes)/(1<<20))
	return nil
}

// newestSnapshotBytes is the size of the newest snapshot in a node's data
// directory (0 if none).
func newestSnapshotBytes(dataDir string) int64 {
	dirs, _ := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	var newest string
	for _, d := range dirs {
		if d.IsDir() && !strings.HasSuffix(d.Name(), ".tmp") && d.Name() > newest {
			newest = d.Name()
		}
	}
	if newest == "" {
		return 0
	}
	var n int64
	files, _ := os.ReadDir(filepath.Join(dataDir, "snapshots", newest))
	for _, f := range files {
		if fi, err := f.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// scaleJoin starts a fourth node that joins through the leader, times it
// until its applied index reaches the leader's, then removes it.
func (b *bench) scaleJoin(ctx context.Context, c *cluster, r *result) error {
	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	extra := []string{"--expiry-guard-share", strconv.FormatFloat(b.o.guardShare, 'g', -1, 64)}
	extra = append(extra, strings.Fields(b.o.scale.nodeFlags)...)
	extra = append(extra, strings.Fields(b.o.nodeFlags)...)
	if sec != nil {
		extra = append(extra, sec.nodeFlags...)
	}
	p, err := newNodeProc("n4", 3, b.bin, b.o.ip, b.o.portBase, c.dir, []string{"--join", leader}, extra)
	if err != nil {
		return err
	}
	b.logf("scale: a fourth node joins through the leader")
	t := time.Now()
	if err := p.start(); err != nil {
		return err
	}
	defer p.stop(5 * time.Second)
	var target uint64
	err = waitFor(ctx, b.o.scale.phaseTimeout, func(ctx context.Context) error {
		ls, err := c.status(ctx, leader)
		if err != nil {
			return err
		}
		if target == 0 {
			target = ls.AppliedIndex
		}
		ns, err := c.status(ctx, p.grpcAddr)
		if err != nil {
			return err
		}
		if ns.AppliedIndex < ls.AppliedIndex {
			return fmt.Errorf("n4 applied %d, the leader %d", ns.AppliedIndex, ls.AppliedIndex)
		}
		return nil
	})
	if err != nil {
		if cur := p.procs.Current(); cur != nil {
			b.logf("scale: n4's log:\n%s", cur.LogTail(20))
		}
		return err
	}
	d := time.Since(t)
	r.addMs("join_catch_up", d)
	bySnapshot := false
	if m, err := metrics(ctx, p.httpAddr, "registry_raft_last_snapshot_index"); err == nil && m["registry_raft_last_snapshot_index"] > 0 {
		bySnapshot = true
	}
	r.add("join_by_snapshot", bySnapshot)
	if pid := p.pid(); pid != 0 {
		if s, err := readProcStat(pid); err == nil {
			r.add("rss_mib_n4", s.rss>>20)
		}
	}
	b.logf("scale: n4 joined and caught up with the leader in %v (installed a snapshot: %v)", d.Round(time.Millisecond), bySnapshot)
	cc, err := c.conn(leader)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := registryv1.NewClusterClient(cc).Remove(rctx, &registryv1.RemoveRequest{NodeId: "n4"}); err != nil {
		return fmt.Errorf("removing n4: %w", err)
	}
	return nil
}

// scaleKill SIGKILLs the leader while the fleet beats, times the next
// leader and the next acknowledged beat, keeps beating for observe, then
// restarts the node and times its catch-up.
func (b *bench) scaleKill(ctx context.Context, c *cluster, gen *rawGen, observe time.Duration, r *result) error {
	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	killed := c.node(leader)
	var survivors []string
	for _, e := range c.endpoints {
		if e != leader {
			survivors = append(survivors, e)
		}
	}
	b.logf("scale: SIGKILL the leader %s", killed.id)
	tk := time.Now()
	gen.rec.mark(tk)
	if err := killed.kill(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, b.o.scale.phaseTimeout)
	defer cancel()
	if _, err := c.waitLeader(wctx, survivors); err != nil {
		return fmt.Errorf("no new leader: %w", err)
	}
	newLeader := time.Since(tk)
	r.addMs("kill_next_leader", newLeader)
	err = waitFor(ctx, b.o.scale.phaseTimeout, func(context.Context) error {
		if gen.rec.firstAckAfterMark().IsZero() {
			return errors.New("no beat sent after the kill answered yet")
		}
		return nil
	})
	if err != nil {
		return err
	}
	nextBeat := gen.rec.firstAckAfterMark().Sub(tk)
	r.addMs("kill_next_acked_beat", nextBeat)
	b.logf("scale: after the kill: a new leader in %v, the next acknowledged beat in %v; beating on for %v", newLeader.Round(time.Millisecond), nextBeat.Round(time.Millisecond), observe)
	sleepCtx(ctx, time.Until(tk.Add(observe)))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	tr := time.Now()
	if err := killed.start(); err != nil {
		return err
	}
	err = waitFor(ctx, b.o.scale.phaseTimeout, func(ctx context.Context) error {
		l, err := c.leader(ctx, c.endpoints)
		if err != nil {
			return err
		}
		ls, err := c.status(ctx, l)
		if err != nil {
			return err
		}
		ns, err := c.status(ctx, killed.grpcAddr)
		if err != nil {
			return err
		}
		if ns.AppliedIndex < ls.AppliedIndex {
			return fmt.Errorf("%s applied %d, the leader %d", killed.id, ns.AppliedIndex, ls.AppliedIndex)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("the killed node's catch-up: %w", err)
	}
	r.addMs("killed_node_caught_up", time.Since(tr))
	b.logf("scale: %s restarted and caught up with the leader in %v", killed.id, time.Since(tr).Round(time.Millisecond))
	return nil
}

// scaleRestart stops every node (SIGTERM), starts them again on the same
// data and times until they agree on a leader and each has applied the
// highest index applied before the stop.
func (b *bench) scaleRestart(ctx context.Context, c *cluster, r *result) error {
	var before uint64
	for _, e := range c.endpoints {
		if st, err := c.status(ctx, e); err == nil {
			before = max(before, st.AppliedIndex)
		}
	}
	b.logf("scale: stopping the three nodes (applied index %d)", before)
	var wg sync.WaitGroup
	for _, p := range c.nodes {
		wg.Go(func() { p.stop(30 * time.Second) })
	}
	wg.Wait()
	t := time.Now()
	for _, p := range c.nodes {
		if err := p.start(); err != nil {
			return err
		}
	}
	var leaderAt time.Duration
	err := waitFor(ctx, b.o.scale.phaseTimeout, func(ctx context.Context) error {
		if _, err := c.leader(ctx, c.endpoints); err != nil {
			return err
		}
		if leaderAt == 0 {
			leaderAt = time.Since(t)
		}
		for _, e := range c.endpoints {
			st, err := c.status(ctx, e)
			if err != nil {
				return err
			}
			if st.AppliedIndex < before {
				return fmt.Errorf("%s applied %d < %d", e, st.AppliedIndex, before)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	d := time.Since(t)
	r.addMs("restart_leader", leaderAt)
	r.addMs("restart_caught_up", d)
	b.logf("scale: full restart from disk: a leader after %v, every node at the pre-stop applied index after %v", leaderAt.Round(time.Millisecond), d.Round(time.Millisecond))
	return nil
}
