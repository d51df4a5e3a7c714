package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// w5Options are the watch fan-out workload's flags.
type w5Options struct {
	steps          string
	rounds         int
	pause          time.Duration
	streamsPerConn int
	idle           time.Duration
	roundTimeout   time.Duration
	perStream      int // watches per WatchMany stream; 0: a Watch stream per watcher
	replicas       int
}

func w5Flags(fs *flag.FlagSet, o *w5Options) {
	fs.StringVar(&o.steps, "w5-steps", "1000,10000", "W5: watcher counts to step through, each on a fresh cluster (e.g. 1000,10000,50000)")
	fs.IntVar(&o.rounds, "w5-rounds", 20, "W5: rounds, one registration each")
	fs.DurationVar(&o.pause, "w5-pause", 200*time.Millisecond, "W5: pause between a round's last delivery and the next registration")
	fs.IntVar(&o.streamsPerConn, "w5-streams-per-conn", 1024, "W5: watch streams per gRPC connection; the local nodes get it as --grpc-max-concurrent-streams (default 1024 per connection)")
	fs.DurationVar(&o.idle, "w5-idle", 5*time.Second, "W5: with every watcher open and no writes, how long the nodes' idle CPU is measured")
	fs.IntVar(&o.perStream, "w5-watches-per-stream", 1000, "W5: watches multiplexed on each WatchMany stream; 0: the old mode, one Watch stream per watcher")
	fs.IntVar(&o.replicas, "w5-replicas", 0, "W5: read replicas (--read-replica nodes) to start besides the three voters; watchers spread over all nodes")
	fs.DurationVar(&o.roundTimeout, "w5-round-timeout", 10*time.Second, "W5: how long a round waits for every watcher's event")
}

// w5 measures watch fan-out: for each --w5-steps count N, on a fresh
// cluster, N watchers of one service spread evenly over the nodes, many
// streams sharing each gRPC connection (--w5-streams-per-conn), then
// --w5-rounds rounds of one registration each, sent to the leader. Per
// watcher and round: the time from the Register call until the watcher
// received its event (delivery), split by the role of the watcher's node
// in that round; per node and round the earliest delivery (*_first) and
// how far each follower's trails the leader's (follower_lag: a follower
// learns of a commit with the leader's next AppendEntries). Also the
// nodes' RSS before and after opening the watchers, their CPU at idle
// with the watchers open (--w5-idle) and per round.
func (b *bench) w5(ctx context.Context) error {
	var steps []int
	for _, s := range splitList(b.o.w5.steps) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("--w5-steps: %q is not a positive count", s)
		}
		steps = append(steps, n)
	}
	if b.o.w5.perStream < 0 || b.o.w5.replicas < 0 {
		return fmt.Errorf("--w5-watches-per-stream (%d) and --w5-replicas (%d) must not be negative", b.o.w5.perStream, b.o.w5.replicas)
	}
	if b.o.w5.rounds < 1 || b.o.w5.streamsPerConn < 1 {
		return fmt.Errorf("--w5-rounds (%d) and --w5-streams-per-conn (%d) must be at least 1", b.o.w5.rounds, b.o.w5.streamsPerConn)
	}
	for _, n := range steps {
		if err := b.w5Step(ctx, n); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// w5Watcher is one watch stream: the node it is on and, per round, when
// its event arrived (since the step's base time; 0: not yet).
type w5Watcher struct {
	node    int
	arrived []atomic.Int64
	resets  atomic.Int64 // resets after the first
}

func (b *bench) w5Step(ctx context.Context, n int) error {
	o := b.o.w5
	// Every watcher comes from this machine's one address: a node must
	// accept all of its share of them, from one client.
	c, err := b.cluster(ctx,
		"--max-watchers", strconv.Itoa(max(n, 10_000)),
		"--max-watches-per-client", strconv.Itoa(max(n, 1024)),
		"--grpc-max-concurrent-streams", strconv.Itoa(max(o.streamsPerConn, 1024)))
	if err != nil {
		return err
	}
	defer c.close()
	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	watchNodes := slices.Clone(c.endpoints)
	if o.replicas > 0 {
		b.logf("W5: starting %d read replicas", o.replicas)
		rs, err := c.startReplicas(ctx, o.replicas, b.bin, b.o.ip, b.o.portBase)
		if err != nil {
			return err
		}
		watchNodes = append(watchNodes, rs...)
	}
	nodes := len(watchNodes)
	perNode := (n + nodes - 1) / nodes
	streamsPerNode := perNode
	if o.perStream > 0 {
		streamsPerNode = (perNode + o.perStream - 1) / o.perStream
	}
	connsPerNode := (streamsPerNode + o.streamsPerConn - 1) / o.streamsPerConn
	conns := make([][]*grpc.ClientConn, nodes)
	for i, e := range watchNodes {
		for range connsPerNode {
			cc, err := grpc.NewClient(e, dialOptions()...)
			if err != nil {
				return err
			}
			defer cc.Close()
			conns[i] = append(conns[i], cc)
		}
	}
	const service = "w5"
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	prefix := "w5-" + run + "-"
	base := time.Now()
	since := func() int64 { return int64(time.Since(base)) }
	roundStart := make([]atomic.Int64, o.rounds)
	got := make([]atomic.Int64, o.rounds) // watchers that have round r's event

	mode := fmt.Sprintf("WatchMany, %d per stream", o.perStream)
	if o.perStream == 0 {
		mode = "a Watch stream each"
	}
	if o.replicas > 0 {
		mode += fmt.Sprintf(", %d replicas", o.replicas)
	}
	r := &result{Workload: "W5", Case: fmt.Sprintf("%d watchers (%s)", n, mode), Params: map[string]any{
		"watchers": n, "rounds": o.rounds, "nodes": nodes, "replicas": o.replicas, "conns_per_node": connsPerNode,
		"watches_per_stream": o.perStream,
		"streams_per_conn":   o.streamsPerConn, "pause_ms": ms(o.pause), "node_flags": b.o.nodeFlags,
	}}
	b.logf("W5: opening %d watchers (%d connections per node)", n, connsPerNode)
	idle0 := c.sample()

	wctx, wcancel := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		opened  atomic.Int64
		failed  atomic.Int64
		lastErr atomic.Pointer[error]
	)
	defer func() { wcancel(); wg.Wait() }()
	watchers := make([]*w5Watcher, n)
	openStart := time.Now()
	// seen records round k's event (an instance id) for w.
	seen := func(w *w5Watcher, k int) {
		if w.arrived[k].Load() == 0 {
			w.arrived[k].Store(since())
			got[k].Add(1)
		}
	}
	// rounds returns the rounds whose events msg carries.
	rounds := func(msg *registryv1.WatchResponse) []int {
		var ks []int
		for _, ev := range msg.GetEvents() {
			if ev.Type != registryv1.EventType_EVENT_TYPE_REGISTERED {
				continue
			}
			rest, ok := strings.CutPrefix(ev.GetInstance().GetId(), prefix)
			if !ok {
				continue
			}
			if k, perr := strconv.Atoi(rest); perr == nil && k >= 0 && k < o.rounds {
				ks = append(ks, k)
			}
		}
		return ks
	}
	fail := func(err error) {
		if wctx.Err() == nil {
			lastErr.Store(&err)
			failed.Add(1)
		}
	}
	for i := range n {
		watchers[i] = &w5Watcher{node: i % nodes, arrived: make([]atomic.Int64, o.rounds)}
	}
	if o.perStream == 0 { // the old mode: a Watch stream per watcher
		for i, w := range watchers {
			cc := conns[w.node][(i/nodes)%connsPerNode]
			wg.Go(func() {
				stream, err := registryv1.NewRegistryClient(cc).Watch(wctx, &registryv1.WatchRequest{Service: service})
				first := true
				for err == nil {
					var msg *registryv1.WatchResponse
					if msg, err = stream.Recv(); err != nil {
						break
					}
					if first {
						first = false
						opened.Add(1)
					} else if msg.IsReset {
						w.resets.Add(1)
					}
					for _, k := range rounds(msg) {
						seen(w, k)
					}
				}
				fail(err)
			})
		}
	} else { // each node's watchers in WatchMany streams of perStream watches
		for node := range nodes {
			var mine []*w5Watcher
			for i := node; i < n; i += nodes {
				mine = append(mine, watchers[i])
			}
			for s := 0; len(mine) > 0; s++ {
				group := mine[:min(o.perStream, len(mine))]
				mine = mine[len(group):]
				cc := conns[node][s%connsPerNode]
				wg.Go(func() {
					stream, err := registryv1.NewRegistryClient(cc).WatchMany(wctx)
					for id := range group {
						if err == nil {
							err = stream.Send(&registryv1.WatchManyRequest{Request: &registryv1.WatchManyRequest_Create{
								Create: &registryv1.WatchCreate{WatchId: uint64(id), Service: service}}})
						}
					}
					first := make([]bool, len(group))
					for err == nil {
						var msg *registryv1.WatchManyResponse
						if msg, err = stream.Recv(); err != nil {
							break
						}
						if e := msg.Ended; e != nil {
							err = fmt.Errorf("watch %v ended: code %d: %s", msg.WatchIds, e.Code, e.Message)
							break
						}
						ks := rounds(msg.Response)
						for _, id := range msg.WatchIds {
							if id >= uint64(len(group)) {
								continue
							}
							w := group[id]
							if !first[id] {
								first[id] = true
								opened.Add(1)
							} else if msg.Response.GetIsReset() {
								w.resets.Add(1)
							}
							for _, k := range ks {
								seen(w, k)
							}
						}
					}
					fail(err)
				})
			}
		}
	}
	octx, ocancel := context.WithTimeout(ctx, b.o.stepTimeout)
	err = poll.Until(octx, func(context.Context) error {
		if k := opened.Load(); k < int64(n) && failed.Load() == 0 {
			return fmt.Errorf("%d of %d watches open", k, n)
		}
		return nil // all open, or one failed
	})
	ocancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		err = fmt.Errorf("%d watches failed (last: %v)", f, *lastErr.Load())
	}
	if err != nil {
		r.add("verdict", "fail: opening the watches: "+err.Error())
		b.rep.emit(r)
		return nil
	}
	r.addMs("open_time", time.Since(openStart))

	// Memory: what the nodes hold for the watchers, once settled.
	sleepCtx(ctx, time.Second)
	open := c.sample()
	if len(open) > 0 {
		var before, after int64
		for pid, s := range open {
			before += idle0[pid].rss
			after += s.rss
		}
		r.add("node_rss_mib_before", before>>20)
		r.add("node_rss_mib_after", after>>20)
		r.add("node_rss_kib_per_watcher", round1(float64(after-before)/1024/float64(n)))
	}
	// CPU at idle with every watcher open.
	b.logf("W5: %d watchers open; %v idle", n, o.idle)
	idleA := c.sample()
	idleStart := time.Now()
	sleepCtx(ctx, o.idle)
	idleB := c.sample()
	if len(idleB) > 0 {
		r.add("node_idle_cpu_s_per_s", round2(cpuSum(idleA, idleB).Seconds()/time.Since(idleStart).Seconds()))
	}

	b.logf("W5: %d rounds", o.rounds)
	term0 := c.term(ctx)
	cpu0 := c.sample()
	self0, _ := readProcStat(os.Getpid())
	var regLat []time.Duration
	var regErrs int
	leaderAt := make([]int, o.rounds) // the leader's node in round k; -1: its Register failed
	complete := 0
	for k := range o.rounds {
		leaderAt[k] = -1
		req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: service, Id: prefix + strconv.Itoa(k), Address: fmt.Sprintf("127.0.0.1:%d", 20000+k),
			Incarnation: 1, Ttl: durationpb.New(10 * time.Minute),
		}}
		cc, err := c.conn(leader)
		if err != nil {
			return err
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		t := time.Now()
		roundStart[k].Store(since())
		_, err = registryv1.NewRegistryClient(cc).Register(rctx, req)
		rcancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The round is left out (it may still have been applied); the
			// next one goes to the leader the nodes then agree on.
			regErrs++
			b.logf("W5: round %d: Register: %v", k, err)
			lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
			if l, err := c.waitLeader(lctx, c.endpoints); err == nil {
				leader = l
			}
			lcancel()
			continue
		}
		regLat = append(regLat, time.Since(t))
		leaderAt[k] = slices.Index(watchNodes, leader)
		wait, wcancel := context.WithTimeout(ctx, o.roundTimeout)
		if poll.Until(wait, func(context.Context) error {
			if got[k].Load() < int64(n) {
				return errors.New("not every watcher has the event")
			}
			return nil
		}) == nil {
			complete++
		}
		wcancel()
		sleepCtx(ctx, o.pause)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	cpu1 := c.sample()
	self1, _ := readProcStat(os.Getpid())
	term1 := c.term(ctx)

	// Delivery times by the watcher node's role in the round, and per
	// node and round the earliest (when the node applied the entry, give
	// or take its first send).
	var all, onLeader, onFollowers, leaderFirst, followerFirst, lag []time.Duration
	missing, resets := 0, int64(0)
	for k, li := range leaderAt {
		if li < 0 {
			continue
		}
		start := roundStart[k].Load()
		first := make([]time.Duration, nodes)
		for _, w := range watchers {
			a := w.arrived[k].Load()
			if a == 0 {
				missing++
				continue
			}
			d := time.Duration(a - start)
			all = append(all, d)
			if w.node == li {
				onLeader = append(onLeader, d)
			} else {
				onFollowers = append(onFollowers, d)
			}
			if first[w.node] == 0 || d < first[w.node] {
				first[w.node] = d
			}
		}
		for i, f := range first {
			switch {
			case f == 0:
			case i == li:
				leaderFirst = append(leaderFirst, f)
			default:
				followerFirst = append(followerFirst, f)
				if first[li] > 0 {
					lag = append(lag, f-first[li])
				}
			}
		}
	}
	for _, w := range watchers {
		resets += w.resets.Load()
	}
	r.add("rounds_complete", complete)
	r.add("deliveries", len(all))
	r.add("missing", missing)
	r.add("resets_after_open", resets)
	r.add("register_errors", regErrs)
	r.add("leader_changes", term1-term0)
	r.addDist("register_latency", regLat)
	r.addDist("delivery", all)
	r.addDist("leader_delivery", onLeader)
	r.addDist("follower_delivery", onFollowers)
	r.addDist("leader_first", leaderFirst)
	r.addDist("follower_first", followerFirst)
	r.addDist("follower_lag", lag)
	if len(cpu1) > 0 {
		cpu := cpuSum(cpu0, cpu1)
		r.add("node_cpu_ms_per_round", round1(float64(cpu.Milliseconds())/float64(o.rounds)))
		if p := c.node(leader); p != nil {
			pid := p.pid()
			r.add("leader_cpu_ms_per_round", round1(float64((cpu1[pid].cpu-cpu0[pid].cpu).Milliseconds())/float64(o.rounds)))
		}
	}
	r.add("bench_cpu_ms_per_round", round1(float64((self1.cpu-self0.cpu).Milliseconds())/float64(o.rounds)))
	if missing > 0 {
		r.add("verdict", fmt.Sprintf("fail: %d deliveries missing", missing))
	} else {
		r.add("verdict", "pass")
	}
	b.rep.emit(r)
	return nil
}

// cpuSum is the nodes' CPU time from a to b.
func cpuSum(a, b nodeSample) time.Duration {
	var d time.Duration
	for pid, s := range b {
		d += s.cpu - a[pid].cpu
	}
	return d
}
