package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

func TestConsoleSamplerKeepsPerSecondRatesOfTheLastTwoMinutes(t *testing.T) {
	s := &consoleSampler{}
	if got := s.series(); len(got.BeatsPerSecond) != 0 || len(got.ExpirationsPerSecond) != 0 {
		t.Fatalf("before any sample: %+v, want empty series", got)
	}
	// The first sample only primes the counters: no rate yet.
	s.add(100, 5)
	s.add(130, 5)
	s.add(130, 7)
	// A counter that goes down (a restarted registry) is no negative rate.
	s.add(10, 7)
	got := s.series()
	if diff := cmp.Diff(consoleSeries{BeatsPerSecond: []float64{30, 0, 0}, ExpirationsPerSecond: []float64{0, 2, 0}}, got); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
	for i := range consoleSamples + 10 {
		s.add(10+float64(i+1), 7)
	}
	got = s.series()
	if len(got.BeatsPerSecond) != consoleSamples || got.BeatsPerSecond[0] != 1 {
		t.Errorf("after %d more samples: %d values starting %v, want the last %d, all 1", consoleSamples+10, len(got.BeatsPerSecond), got.BeatsPerSecond[:3], consoleSamples)
	}
}

func TestWatchPumpDropsAReaderThatFallsABufferBehind(t *testing.T) {
	var wg sync.WaitGroup
	calls := 0
	recv := func() (*registryv1.WatchResponse, error) {
		calls++
		return &registryv1.WatchResponse{Index: uint64(calls)}, nil
	}
	p := startWatchPump(&wg, &registryv1.WatchResponse{Index: 0}, recv, 5)
	// Nobody reads: the pump fills the buffer, then gives up.
	select {
	case <-p.overflow:
	case <-time.After(10 * time.Second):
		t.Fatal("no overflow after 10 s with a full buffer")
	}
	wg.Wait() // the goroutine has ended: it reads no more
	if calls != 5 {
		t.Errorf("the pump read %d messages, want the 4 that fit after the first and the one that did not", calls)
	}
	for i := range 5 {
		if m := <-p.msgs; m.Index != uint64(i) {
			t.Errorf("message %d has index %d, want %d (the first one first, then in order)", i, m.Index, i)
		}
	}
}

func TestWatchPumpEndsWithTheStream(t *testing.T) {
	var wg sync.WaitGroup
	sent := 0
	recv := func() (*registryv1.WatchResponse, error) {
		if sent == 2 {
			return nil, context.Canceled
		}
		sent++
		return &registryv1.WatchResponse{}, nil
	}
	p := startWatchPump(&wg, nil, recv, 8)
	wg.Wait()
	if err := <-p.done; !errors.Is(err, context.Canceled) {
		t.Errorf("done: %v, want the stream's error", err)
	}
	if len(p.msgs) != 2 {
		t.Errorf("%d messages buffered, want 2", len(p.msgs))
	}
	select {
	case <-p.overflow:
		t.Error("overflow closed, but the buffer never filled")
	default:
	}
}
