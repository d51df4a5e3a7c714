package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regcenter/registry/client"
)

// w3 measures detection latency: --w3-instances instances (TTL --w3-ttl,
// a beat every --w3-interval) of service "w3". The ones that keep beating
// share one client; each one that stops has a client of its own, so that
// OnBeatAck gives its last acknowledged beat exactly. At t0 those clients
// close (keeping their registrations: they just stop beating). A watcher
// records when each removal (EXPIRED) arrives. t0 is when those clients
// have closed, right after their beats of one round were acknowledged.
func (b *bench) w3(ctx context.Context) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if b.o.w3Stopped > b.o.w3Instances {
		return fmt.Errorf("--w3-stopped (%d) exceeds --w3-instances (%d)", b.o.w3Stopped, b.o.w3Instances)
	}
	logs := &clientLog{}
	newClient := func(cfg client.Config) (*client.Client, error) {
		cfg.Endpoints = c.endpoints
		cfg.Logger = slog.New(logs)
		return client.New(clientConfig(cfg))
	}
	opts := []client.RegisterOption{client.WithBeatInterval(b.o.w3Interval), client.WithTTL(b.o.w3TTL)}
	const service = "w3"
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	id := func(group string, i int) string { return fmt.Sprintf("w3-%s-%s-%d", run, group, i) }

	watcher, err := newClient(client.Config{})
	if err != nil {
		return err
	}
	defer watcher.Close()
	keep, err := newClient(client.Config{})
	if err != nil {
		return err
	}
	defer keep.Close()
	stopped := make([]*client.Client, b.o.w3Stopped)
	lastAck := make([]atomic.Int64, b.o.w3Stopped) // unix ns of the last acknowledged beat's send
	defer func() {
		for _, s := range stopped {
			if s != nil {
				s.Close()
			}
		}
	}()

	b.logf("W3: registering %d instances, %d of which stop beating", b.o.w3Instances, b.o.w3Stopped)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := range b.o.w3Instances - b.o.w3Stopped {
		if _, err := keep.Register(rctx, client.Instance{Service: service, ID: id("keep", i), Address: "127.0.0.1:80"}, opts...); err != nil {
			return fmt.Errorf("registering: %w", err)
		}
	}
	var (
		wg     sync.WaitGroup
		regErr atomic.Pointer[error]
	)
	for i := range stopped {
		cl, err := newClient(client.Config{
			KeepRegistrationsOnClose: true,
			OnBeatAck: func(n int, lat time.Duration) {
				if n > 0 {
					lastAck[i].Store(time.Now().Add(-lat).UnixNano())
				}
			},
		})
		if err != nil {
			return err
		}
		stopped[i] = cl
		wg.Go(func() {
			if _, err := cl.Register(rctx, client.Instance{Service: service, ID: id("stop", i), Address: "127.0.0.2:80"}, opts...); err != nil {
				regErr.Store(&err)
				return
			}
			lastAck[i].Store(time.Now().UnixNano()) // registering counts as a beat
		})
	}
	wg.Wait()
	if p := regErr.Load(); p != nil {
		return fmt.Errorf("registering: %w", *p)
	}

	// The watcher: when each instance is removed.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	events, err := watcher.Watch(wctx, service)
	if err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		expired  = map[string]time.Time{}
		deregs   int
		watchEnd = make(chan struct{})
	)
	go func() {
		defer close(watchEnd)
		for ev := range events {
			switch ev.Type {
			case client.EventExpired:
				mu.Lock()
				if _, ok := expired[ev.Instance.ID]; !ok {
					expired[ev.Instance.ID] = time.Now()
				}
				mu.Unlock()
			case client.EventDeregistered:
				mu.Lock()
				deregs++
				mu.Unlock()
			}
		}
	}()
	defer func() { wcancel(); <-watchEnd }()

	sleepCtx(ctx, b.o.w3Settle)
	// Stop right after a round of acknowledged beats, so that no beat is
	// in flight (sent, maybe applied, but never acknowledged) at t0.
	round := time.Now().UnixNano()
	for i := range lastAck {
		for lastAck[i].Load() < round && ctx.Err() == nil && time.Now().Before(time.Unix(0, round).Add(2*b.o.w3Interval)) {
			sleepCtx(ctx, 2*time.Millisecond)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, s := range stopped {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
	t0 := time.Now()
	b.logf("W3: t0; waiting for %d removals", b.o.w3Stopped)

	deadline := t0.Add(b.o.w3TTL + b.o.w3Wait)
	minEnd := t0.Add(2 * b.o.w3TTL) // watch the others for one more TTL at least
	for {
		mu.Lock()
		n := 0
		for i := range stopped {
			if _, ok := expired[id("stop", i)]; ok {
				n++
			}
		}
		mu.Unlock()
		now := time.Now()
		if (n == len(stopped) && now.After(minEnd)) || now.After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	mu.Lock()
	defer mu.Unlock()
	var afterT0, afterAck []time.Duration
	for i := range stopped {
		seen, ok := expired[id("stop", i)]
		if !ok {
			continue
		}
		afterT0 = append(afterT0, seen.Sub(t0)-b.o.w3TTL)
		afterAck = append(afterAck, seen.Sub(time.Unix(0, lastAck[i].Load()))-b.o.w3TTL)
	}
	falseExp := 0
	for i := range b.o.w3Instances - b.o.w3Stopped {
		if _, ok := expired[id("keep", i)]; ok {
			falseExp++
		}
	}
	r := &result{Workload: "W3", Case: fmt.Sprintf("%d of %d stop", b.o.w3Stopped, b.o.w3Instances), Params: map[string]any{
		"instances": b.o.w3Instances, "stopped": b.o.w3Stopped, "ttl_s": b.o.w3TTL.Seconds(), "interval_s": b.o.w3Interval.Seconds(),
	}}
	r.add("removed", len(afterT0))
	r.add("not_removed", len(stopped)-len(afterT0))
	r.addDist("seen_minus_t0_minus_ttl", afterT0)
	r.addDist("seen_minus_last_ack_minus_ttl", afterAck)
	r.add("false_expirations", falseExp)
	r.add("deregistered_events", deregs)
	r.add("client_errors", logs.n.Load())
	b.rep.emit(r)
	return nil
}
