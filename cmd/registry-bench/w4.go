package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
)

// expiryWatch counts the EXPIRED events of a watch.
type expiryWatch struct {
	expired atomic.Int64
	done    chan struct{}
	cancel  context.CancelFunc
}

// watchExpiries watches service ("" for all) through cl until stop.
func watchExpiries(ctx context.Context, cl *client.Client, service string) (*expiryWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	events, err := cl.Watch(ctx, service)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &expiryWatch{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		for ev := range events {
			if ev.Type == client.EventExpired {
				w.expired.Add(1)
			}
		}
	}()
	return w, nil
}

func (w *expiryWatch) stop() {
	w.cancel()
	<-w.done
}

// write is one attempt of W4's write loop.
type write struct {
	start, end time.Time
	ok         bool
}

// w4 measures leader failover: --w4-instances instances beating (over
// --w4-clients clients) and a write loop that sends, every
// --w4-write-every and without waiting for the previous one, a Register of
// a new probe instance through the two nodes that survive, alternately;
// then the leader is SIGKILLed. Measured: the time from the kill to the
// end of the first write started after it that succeeds; the beats
// acknowledged during that gap against those due; the EXPIRED events until
// --w4-observe after the kill; and, with the killed node restarted once a
// write succeeded, the time until its applied index reaches the leader's;
// then --w4-restarts minus one more restarts of a follower SIGKILLed and
// left down for --w4-down, each timed the same way, with the node's own
// start-up steps. With --etcd-binary, the same restarts of an etcd member
// follow (etcd.go).
func (b *bench) w4(ctx context.Context) error {
	if err := b.w4Registry(ctx); err != nil {
		return err
	}
	if b.o.w4x.etcdBinary != "" {
		// After the registry's nodes are gone: one cluster at a time.
		return b.etcdRestarts(ctx)
	}
	return nil
}

func (b *bench) w4Registry(ctx context.Context) error {
	if b.o.endpoints != "" {
		b.logf("W4: skipped: it kills a node, which needs the nodes this command starts (no --endpoints)")
		return nil
	}
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	fl, err := newFleet(c.endpoints, b.o.w4Clients, 0)
	if err != nil {
		return err
	}
	defer fl.close()
	wcl, err := client.New(clientConfig(client.Config{Endpoints: c.endpoints}))
	if err != nil {
		return err
	}
	defer wcl.Close()
	const service = "w4"

	b.logf("W4: registering %d instances", b.o.w4Instances)
	rctx, cancel := context.WithTimeout(ctx, b.o.stepTimeout)
	defer cancel()
	if err := fl.registerAll(rctx, b.o.w4Instances, b.o.regWorkers, "w4", func(int) string { return service },
		client.WithBeatInterval(b.o.w4Interval), client.WithTTL(b.o.w4TTL)); err != nil {
		return err
	}
	watch, err := watchExpiries(ctx, wcl, service)
	if err != nil {
		return err
	}
	defer watch.stop()
	sleepCtx(ctx, 2*b.o.w4Interval)

	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	var survivors []string
	for _, e := range c.endpoints {
		if e != leader {
			survivors = append(survivors, e)
		}
	}
	stubs := make([]registryv1.RegistryClient, len(survivors))
	for i, e := range survivors {
		cc, err := grpc.NewClient(e, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		stubs[i] = registryv1.NewRegistryClient(cc)
	}

	// The write loop.
	var (
		wmu    sync.Mutex
		writes []write
	)
	lctx, lcancel := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	defer func() { lcancel(); lwg.Wait() }()
	lwg.Go(func() {
		tick := time.NewTicker(b.o.w4WriteEvery)
		defer tick.Stop()
		for n := 0; ; n++ {
			// Each write is a new probe instance, sent without waiting for
			// the previous one: a write stuck on the dead leader does not
			// delay the next.
			req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "w4-probe", Id: fmt.Sprintf("probe-%d", n), Address: "127.0.0.1:80", Incarnation: 1}}
			stub := stubs[n%len(stubs)]
			lwg.Go(func() {
				w := write{start: time.Now()}
				cctx, ccancel := context.WithTimeout(lctx, 2*time.Second)
				_, err := stub.Register(cctx, req)
				ccancel()
				w.end, w.ok = time.Now(), err == nil
				wmu.Lock()
				writes = append(writes, w)
				wmu.Unlock()
			})
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	// A client write at the kill: through the Go client (all three
	// endpoints, its failover, backoff and leader hints), warmed up by a
	// write before the kill.
	pcl, err := client.New(clientConfig(client.Config{Endpoints: c.endpoints, KeepRegistrationsOnClose: true}))
	if err != nil {
		return err
	}
	defer pcl.Close()
	probe := func(id string) error {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		_, err := pcl.Register(pctx, client.Instance{Service: "w4-probe", ID: id, Address: "127.0.0.2:80"},
			client.WithBeatInterval(b.o.w4Interval), client.WithTTL(b.o.w4TTL))
		return err
	}
	if err := probe("client-probe-warm-up"); err != nil {
		return fmt.Errorf("client probe before the kill: %w", err)
	}
	sleepCtx(ctx, 500*time.Millisecond)

	killed := c.node(leader)
	term0 := c.term(ctx)
	clientOnLeader := pcl.Endpoint() == leader
	b.logf("W4: SIGKILL leader %s", killed.id)
	fl.record()
	tk := time.Now()
	if err := killed.kill(); err != nil {
		return err
	}
	clientWrite := make(chan time.Duration, 1)
	go func() {
		err := probe("client-probe-at-kill")
		if err != nil {
			b.logf("W4: the client's write at the kill failed: %v", err)
			clientWrite <- -1
			return
		}
		clientWrite <- time.Since(tk)
	}()

	// Until a write started after the kill succeeds: the earliest end of
	// one, once one has ended and every write started before it has
	// ended too (each is bounded by its 2s timeout).
	var recovered time.Time
	for time.Since(tk) < 30*time.Second && ctx.Err() == nil {
		sleepCtx(ctx, 5*time.Millisecond)
		wmu.Lock()
		for _, w := range writes {
			if w.ok && !w.start.Before(tk) && (recovered.IsZero() || w.end.Before(recovered)) {
				recovered = w.end
			}
		}
		wmu.Unlock()
		if !recovered.IsZero() && time.Since(recovered) > 2*time.Second {
			break
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if recovered.IsZero() {
		return errors.New("no write succeeded within 30s of the kill")
	}
	gap := recovered.Sub(tk)
	b.logf("W4: a write succeeded %v after the kill; restarting %s", gap, killed.id)

	// Restart the killed node and time its catch-up.
	newLeader, err := c.waitLeader(ctx, survivors)
	if err != nil {
		return err
	}
	// Terms the failover took: 1 is one election won at the first vote;
	// more means split votes (with pre-vote, a refused pre-vote starts no
	// term, so it does not show here).
	var failoverTerms uint64
	if st, err := c.status(ctx, newLeader); err == nil {
		failoverTerms = st.Term - term0
	}
	first, err := b.timeRestart(ctx, c, killed, time.Since(tk), true)
	if err != nil {
		return err
	}
	restarts := []restartTiming{first}
	sleepCtx(ctx, time.Until(tk.Add(b.o.w4Observe)))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// More restarts, of a follower each, while the instances beat.
	for i := 1; i < b.o.w4x.restarts; i++ {
		rt, err := b.restartFollower(ctx, c, i)
		if err != nil {
			return err
		}
		restarts = append(restarts, rt)
	}
	acks, maxGap := fl.stop()

	// Beats: those acknowledged in [tk, recovered] against those due.
	acked := 0
	for _, a := range acks {
		if !a.at.After(recovered) {
			acked += a.n
		}
	}
	due := int(float64(b.o.w4Instances) * gap.Seconds() / b.o.w4Interval.Seconds())
	wmu.Lock()
	failedWrites := 0
	for _, w := range writes {
		if !w.ok && !w.start.Before(tk) {
			failedWrites++
		}
	}
	wmu.Unlock()

	r := &result{Workload: "W4", Case: fmt.Sprintf("%d beating, kill leader", b.o.w4Instances), Params: map[string]any{
		"instances": b.o.w4Instances, "clients": b.o.w4Clients, "ttl_s": b.o.w4TTL.Seconds(), "interval_s": b.o.w4Interval.Seconds(),
		"write_every_ms": ms(b.o.w4WriteEvery), "observe_s": b.o.w4Observe.Seconds(),
	}}
	r.addMs("next_write_after_kill", gap)
	if d := <-clientWrite; d >= 0 {
		r.addMs("client_write_at_kill_done_after", d)
	} else {
		r.add("client_write_at_kill_done_after_ms", "failed within 10s")
	}
	r.add("client_endpoint_was_leader", clientOnLeader)
	r.add("writes_failed_after_kill", failedWrites)
	r.add("failover_terms", failoverTerms)
	r.add("beats_due_in_gap", due)
	r.add("beats_acked_in_gap", acked)
	r.add("beats_failed_in_gap", max(0, due-acked))
	r.addMs("max_client_ack_gap", maxGap)
	r.add("beat_stream_breaks", fl.logs.count("beat stream broke; reopening on another node"))
	r.add("reregistered", fl.logs.count("re-registered"))
	r.add("false_expirations", watch.expired.Load())
	if first.caughtUp > 0 {
		r.addMs("restarted_node_caught_up", first.caughtUp)
	} else {
		r.add("restarted_node_caught_up_ms", "not within 60s")
	}
	addRestarts(r, restarts)
	b.rep.emit(r)
	return nil
}

// w4Options are W4's restart flags.
type w4Options struct {
	restarts      int
	down          time.Duration
	etcdBinary    string
	etcdctlBinary string
}

func (o *w4Options) register(fs *flag.FlagSet) {
	fs.IntVar(&o.restarts, "w4-restarts", 3, "W4: restarts timed: the killed leader's, then each of a SIGKILLed follower, while the instances beat")
	fs.DurationVar(&o.down, "w4-down", 2500*time.Millisecond, "W4: how long the first killed follower stays down before its restart; each further one 0.5s longer")
	fs.StringVar(&o.etcdBinary, "etcd-binary", "", "W4: also time the restart of an etcd member, with this etcd binary (three members, --w4-instances keys on leases kept alive every --w4-interval)")
	fs.StringVar(&o.etcdctlBinary, "etcdctl-binary", "etcdctl", "W4 with --etcd-binary: the etcdctl binary whose 'endpoint status -w json' reads the members' applied index")
}

// restartTiming is one timed restart: from starting the process to the
// node's applied index reaching the leader's, and the node's own account
// of its start-up steps (registry_startup_seconds, from node.New).
type restartTiming struct {
	node      string
	wasLeader bool
	down      time.Duration
	caughtUp  time.Duration // 0: not within 60s
	steps     map[string]time.Duration
	poll      time.Duration // median time of one poll of both statuses: the figure's resolution
}

// startupStepOrder is the node's order of registry_startup_seconds steps.
var startupStepOrder = []string{"bolt_opened", "snapshot_restored", "raft_started", "first_contact", "first_apply", "caught_up"}

func (rt restartTiming) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (down %v, leader before: %v): caught up %v after the restart (polls took %v)", rt.node, rt.down.Round(time.Millisecond), rt.wasLeader, rt.caughtUp.Round(time.Millisecond), rt.poll.Round(time.Millisecond))
	for _, s := range startupStepOrder {
		if d, ok := rt.steps[s]; ok {
			fmt.Fprintf(&b, "; %s %.1fms", s, ms(d))
		}
	}
	return b.String()
}

// timeRestart starts p again and times it until its applied index reaches
// the leader's, polling the leader then the node, 5 ms after the last
// answers.
func (b *bench) timeRestart(ctx context.Context, c *cluster, p *nodeProc, down time.Duration, wasLeader bool) (restartTiming, error) {
	rt := restartTiming{node: p.id, wasLeader: wasLeader, down: down}
	var others []string
	for _, e := range c.endpoints {
		if e != p.grpcAddr {
			others = append(others, e)
		}
	}
	leader, err := c.waitLeader(ctx, others)
	if err != nil {
		return rt, err
	}
	// A connection of its own that retries its dial every 10-50 ms: the
	// cached one backs off for a second and more after dials refused while
	// the node is down or starting, and the figure would be gRPC's
	// reconnect backoff (the first W4 figures, 1.3-1.8 s, included it).
	cc, err := grpc.NewClient(p.grpcAddr, append(dialOptions(), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 50 * time.Millisecond},
		MinConnectTimeout: time.Second,
	}))...)
	if err != nil {
		return rt, err
	}
	defer cc.Close()
	stub := registryv1.NewClusterClient(cc)
	tr := time.Now()
	if err := p.start(); err != nil {
		return rt, fmt.Errorf("restarting %s: %w", p.id, err)
	}
	var polls []time.Duration
	for time.Since(tr) < 60*time.Second && ctx.Err() == nil {
		// The leader first: a node in step with it then passes.
		start := time.Now()
		ls, lerr := c.status(ctx, leader)
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		ns, nerr := stub.Status(sctx, &registryv1.StatusRequest{})
		cancel()
		if nerr == nil {
			polls = append(polls, time.Since(start))
		}
		if lerr == nil && nerr == nil && ns.AppliedIndex >= ls.AppliedIndex {
			rt.caughtUp = time.Since(tr)
			break
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
	slices.Sort(polls)
	rt.poll = percentile(polls, 0.5)
	if ctx.Err() != nil {
		return rt, ctx.Err()
	}
	rt.steps = b.startupSteps(ctx, p)
	b.logf("W4: restart of %s", rt)
	return rt, nil
}

// restartFollower SIGKILLs a follower (the i-th, alternately), leaves it
// down for --w4-down plus 0.5 s per restart before it, and times its
// restart.
func (b *bench) restartFollower(ctx context.Context, c *cluster, i int) (restartTiming, error) {
	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return restartTiming{}, err
	}
	var followers []*nodeProc
	for _, p := range c.nodes {
		if p.grpcAddr != leader {
			followers = append(followers, p)
		}
	}
	p := followers[i%len(followers)]
	// Each restart stays down half a second longer than the one before,
	// so that the restarts land at different points of the leader's
	// replication backoff (10 ms doubling per failure in hashicorp/raft).
	down := b.o.w4x.down + time.Duration(i-1)*500*time.Millisecond
	b.logf("W4: SIGKILL follower %s, restarting it after %v", p.id, down)
	if err := p.kill(); err != nil {
		return restartTiming{}, err
	}
	tk := time.Now()
	sleepCtx(ctx, down)
	return b.timeRestart(ctx, c, p, time.Since(tk), false)
}

// startupSteps reads the node's registry_startup_seconds from its metrics
// endpoint, waiting up to 2 s for its caught_up step; nil with --secure
// (the endpoint then wants a client certificate) or when it cannot be read.
func (b *bench) startupSteps(ctx context.Context, p *nodeProc) map[string]time.Duration {
	if sec != nil || p.httpAddr == "" {
		return nil
	}
	var steps map[string]time.Duration
	deadline := time.Now().Add(2 * time.Second)
	for ctx.Err() == nil {
		steps = scrapeStartupSteps(ctx, "http://"+p.httpAddr+"/metrics")
		if _, ok := steps["caught_up"]; ok || time.Now().After(deadline) {
			return steps
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return steps
}

func scrapeStartupSteps(ctx context.Context, url string) map[string]time.Duration {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return parseStartupSteps(string(body))
}

// parseStartupSteps picks registry_startup_seconds{step="..."} out of a
// Prometheus text exposition.
func parseStartupSteps(text string) map[string]time.Duration {
	steps := map[string]time.Duration{}
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, `registry_startup_seconds{step="`)
		if !ok {
			continue
		}
		step, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		if sec, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			steps[step] = time.Duration(sec * float64(time.Second))
		}
	}
	return steps
}

// addRestarts reports the restarts: their number, p50 and max of the
// catch-up, each one's figure, and the p50 of each start-up step.
func addRestarts(r *result, rs []restartTiming) {
	var total []time.Duration
	var each []string
	for _, rt := range rs {
		if rt.caughtUp > 0 {
			total = append(total, rt.caughtUp)
			each = append(each, strconv.FormatFloat(ms(rt.caughtUp), 'f', 1, 64))
		} else {
			each = append(each, "not-within-60s")
		}
	}
	slices.Sort(total)
	r.add("restarts", len(rs))
	var polls []time.Duration
	for _, rt := range rs {
		polls = append(polls, rt.poll)
	}
	slices.Sort(polls)
	r.addMs("restart_status_poll_p50", percentile(polls, 0.5))
	r.add("restart_caught_up_each_ms", strings.Join(each, " "))
	r.addMs("restart_caught_up_p50", percentile(total, 0.5))
	if len(total) > 0 {
		r.addMs("restart_caught_up_max", total[len(total)-1])
	}
	for _, s := range startupStepOrder {
		var d []time.Duration
		for _, rt := range rs {
			if v, ok := rt.steps[s]; ok {
				d = append(d, v)
			}
		}
		if len(d) > 0 {
			slices.Sort(d)
			r.addMs("restart_step_"+s+"_p50", percentile(d, 0.5))
		}
	}
}
