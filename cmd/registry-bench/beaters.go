package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regcenter/registry/client"
)

// fleet is a set of clients that keep registered instances beating, and
// records every acknowledged frame.
type fleet struct {
	clients []*client.Client
	logs    *clientLog

	recording atomic.Bool
	mu        sync.Mutex
	acks      []ack           // while recording
	lastAck   []time.Time     // per client: when its last frame was answered
	maxGap    []time.Duration // per client: longest time between answers, while recording
}

// ack is one answered frame.
type ack struct {
	at  time.Time // when the answer came
	lat time.Duration
	n   int
}

// newFleet makes n clients on endpoints; maxBeatsPerFrame 0 is the
// client's default.
func newFleet(endpoints []string, n, maxBeatsPerFrame int) (*fleet, error) {
	f := &fleet{logs: &clientLog{}, lastAck: make([]time.Time, n), maxGap: make([]time.Duration, n)}
	for i := range n {
		cl, err := client.New(clientConfig(client.Config{
			Endpoints:                endpoints,
			Logger:                   slog.New(f.logs),
			KeepRegistrationsOnClose: true, // the cluster is thrown away after
			MaxBeatsPerFrame:         maxBeatsPerFrame,
			OnBeatAck:                func(beats int, lat time.Duration) { f.onAck(i, beats, lat) },
		}))
		if err != nil {
			f.close()
			return nil, err
		}
		f.clients = append(f.clients, cl)
	}
	return f, nil
}

func (f *fleet) onAck(idx, beats int, lat time.Duration) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.recording.Load() {
		f.acks = append(f.acks, ack{now, lat, beats})
		if last := f.lastAck[idx]; !last.IsZero() {
			f.maxGap[idx] = max(f.maxGap[idx], now.Sub(last))
		}
	}
	f.lastAck[idx] = now
}

// record starts recording (and forgets what was recorded).
func (f *fleet) record() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = nil
	clear(f.maxGap)
	f.recording.Store(true)
}

// stop stops recording and returns the acks and the longest gap between
// two answers on one client (including the time since its last answer).
func (f *fleet) stop() ([]ack, time.Duration) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recording.Store(false)
	var gap time.Duration
	for i, g := range f.maxGap {
		gap = max(gap, g, now.Sub(f.lastAck[i]))
	}
	return f.acks, gap
}

func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, c := range f.clients {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}

// registerAll registers n instances, instance i on client i mod clients
// in service serviceOf(i), with workers registrations in flight.
func (f *fleet) registerAll(ctx context.Context, n, workers int, prefix string, serviceOf func(int) string, opts ...client.RegisterOption) error {
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || gctx.Err() != nil {
					return nil
				}
				inst := client.Instance{Service: serviceOf(i), ID: fmt.Sprintf("%s-%d", prefix, i), Address: fmt.Sprintf("127.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)}
				if _, err := f.clients[i%len(f.clients)].Register(gctx, inst, opts...); err != nil {
					return fmt.Errorf("registering %s/%s: %w", inst.Service, inst.ID, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
