package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
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
// write succeeded, the time until its applied index reaches the leader's.
func (b *bench) w4(ctx context.Context) error {
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
			req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "w4-probe", Id: fmt.Sprintf("probe-%d", n), Address: "10.0.0.1:80", Incarnation: 1}}
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
		_, err := pcl.Register(pctx, client.Instance{Service: "w4-probe", ID: id, Address: "10.0.0.2:80"},
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
	tr := time.Now()
	if err := killed.start(); err != nil {
		return fmt.Errorf("restarting %s: %w", killed.id, err)
	}
	var catchUp time.Duration
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
	for time.Since(tr) < 60*time.Second && ctx.Err() == nil {
		ls, lerr := c.status(ctx, newLeader)
		ns, nerr := c.status(ctx, killed.grpcAddr)
		if lerr == nil && nerr == nil && ns.AppliedIndex >= ls.AppliedIndex {
			catchUp = time.Since(tr)
			break
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	sleepCtx(ctx, time.Until(tk.Add(b.o.w4Observe)))
	if ctx.Err() != nil {
		return ctx.Err()
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
	if catchUp > 0 {
		r.addMs("restarted_node_caught_up", catchUp)
	} else {
		r.add("restarted_node_caught_up_ms", "not within 60s")
	}
	b.rep.emit(r)
	return nil
}
