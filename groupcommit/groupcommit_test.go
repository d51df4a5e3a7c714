package groupcommit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/regcenter/registry/groupcommit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// double answers each item with twice its value and counts its flushes.
type double struct {
	flushes atomic.Int64
	sizes   chan int
	delay   time.Duration
}

func (d *double) flush(ctx context.Context, items []int) ([]int, error) {
	d.flushes.Add(1)
	if d.sizes != nil {
		d.sizes <- len(items)
	}
	if d.delay > 0 {
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]int, len(items))
	for i, v := range items {
		out[i] = 2 * v
	}
	return out, nil
}

func newBatcher(t *testing.T, cfg groupcommit.Config, f groupcommit.FlushFunc[int, int]) *groupcommit.Batcher[int, int] {
	t.Helper()
	b, err := groupcommit.New(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestEachSubmitterGetsItsOwnResultsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{}
		b := newBatcher(t, groupcommit.Config{Window: 10 * time.Millisecond}, d.flush)
		var wg sync.WaitGroup
		for w := range 50 {
			wg.Go(func() {
				items := []int{w * 100, w*100 + 1, w*100 + 2}
				got, err := b.Submit(t.Context(), items)
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				if diff := cmp.Diff([]int{2 * items[0], 2 * items[1], 2 * items[2]}, got); diff != "" {
					t.Errorf("worker %d results (-want +got):\n%s", w, diff)
				}
			})
		}
		wg.Wait()
		// An idle batcher flushes the first arrival at once; the rest share one flush.
		if n := d.flushes.Load(); n > 2 {
			t.Errorf("50 concurrent submissions took %d flushes, want at most 2", n)
		}
	})
}

func TestFlushesStartAtLeastOneWindowApart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{}
		b := newBatcher(t, groupcommit.Config{Window: 10 * time.Millisecond}, d.flush)
		// 20 sources each submit once a millisecond for one second, without
		// waiting for answers: 20,000 submissions arriving continuously.
		var wg sync.WaitGroup
		start := time.Now()
		for range 20 {
			wg.Go(func() {
				for range 1000 {
					wg.Go(func() {
						if _, err := b.Submit(t.Context(), []int{1}); err != nil {
							t.Errorf("Submit: %v", err)
						}
					})
					time.Sleep(time.Millisecond) // simulated time: the arrival rate
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		if max := int64(elapsed/(10*time.Millisecond)) + 1; d.flushes.Load() > max {
			t.Errorf("%d flushes in %v, want at most %d (one per 10ms window)", d.flushes.Load(), elapsed, max)
		}
		if d.flushes.Load() < 50 {
			t.Errorf("%d flushes in %v: the batcher held items far longer than its window", d.flushes.Load(), elapsed)
		}
	})
}

func TestWhileOneFlushRunsTheNextBatchAccumulates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{delay: 50 * time.Millisecond, sizes: make(chan int, 100)}
		b := newBatcher(t, groupcommit.Config{Window: time.Millisecond}, d.flush)
		var wg sync.WaitGroup
		wg.Go(func() { b.Submit(t.Context(), []int{1}) })
		if got := <-d.sizes; got != 1 {
			t.Fatalf("first flush has %d items, want 1", got)
		}
		// The first flush is now running for 50ms; these queue behind it.
		for i := range 30 {
			wg.Go(func() { b.Submit(t.Context(), []int{i}) })
		}
		synctest.Wait()
		if got := <-d.sizes; got != 30 {
			t.Errorf("second flush has %d items, want all 30 that arrived during the first", got)
		}
		wg.Wait()
	})
}

func TestMaxItemsBoundsAFlushButNeverSplitsASubmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{sizes: make(chan int, 100), delay: 10 * time.Millisecond}
		b := newBatcher(t, groupcommit.Config{Window: time.Millisecond, MaxItems: 10}, d.flush)
		var wg sync.WaitGroup
		wg.Go(func() { b.Submit(t.Context(), []int{0}) }) // occupies the flusher
		synctest.Wait()
		for range 4 {
			wg.Go(func() { b.Submit(t.Context(), []int{1, 2, 3, 4}) })
		}
		wg.Go(func() { b.Submit(t.Context(), make([]int, 25)) }) // larger than MaxItems: alone
		wg.Wait()
		close(d.sizes)
		var sizes []int
		for s := range d.sizes {
			sizes = append(sizes, s)
		}
		total := 0
		for _, s := range sizes {
			total += s
			if s > 10 && s != 25 {
				t.Errorf("a flush of %d items, want at most 10 (or the one submission of 25)", s)
			}
			if s != 25 && s%4 != 0 && s != 1 {
				t.Errorf("a flush of %d items splits a submission of 4", s)
			}
		}
		if total != 1+16+25 {
			t.Errorf("flushed %d items in all (%v), want 42", total, sizes)
		}
	})
}

func TestAFlushErrorFailsEverySubmissionOfTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		b := newBatcher(t, groupcommit.Config{}, func(context.Context, []int) ([]int, error) { return nil, boom })
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				if _, err := b.Submit(t.Context(), []int{1}); !errors.Is(err, boom) {
					t.Errorf("Submit: got %v, want boom", err)
				}
			})
		}
		wg.Wait()
	})
}

func TestSubmitBeyondMaxPendingIsOverloaded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		b := newBatcher(t, groupcommit.Config{MaxItems: 2, MaxPending: 4}, func(_ context.Context, items []int) ([]int, error) {
			<-release
			return items, nil
		})
		var wg sync.WaitGroup
		wg.Go(func() { b.Submit(t.Context(), []int{1}) }) // being flushed
		synctest.Wait()
		for range 2 {
			wg.Go(func() { b.Submit(t.Context(), []int{1, 2}) }) // 4 pending
		}
		synctest.Wait()
		if _, err := b.Submit(t.Context(), []int{9}); !errors.Is(err, groupcommit.ErrOverloaded) {
			t.Errorf("Submit over MaxPending: got %v, want ErrOverloaded", err)
		}
		close(release)
		wg.Wait()
	})
}

func TestSubmitReturnsWhenItsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{delay: time.Hour}
		b := newBatcher(t, groupcommit.Config{FlushTimeout: 2 * time.Hour}, d.flush)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := b.Submit(ctx, []int{1}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Submit: got %v, want DeadlineExceeded", err)
		}
	})
}

func TestCloseFailsWaitingSubmissionsAndStopsTheFlusher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &double{delay: time.Hour}
		b, err := groupcommit.New(groupcommit.Config{FlushTimeout: 2 * time.Hour}, d.flush)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		go func() { _, err := b.Submit(t.Context(), []int{1}); errs <- err }() // in the flush
		synctest.Wait()
		go func() { _, err := b.Submit(t.Context(), []int{2}); errs <- err }() // waiting
		synctest.Wait()
		b.Close()
		for range 2 {
			if err := <-errs; err == nil {
				t.Errorf("Submit after Close: got nil error")
			}
		}
		if _, err := b.Submit(t.Context(), []int{3}); !errors.Is(err, groupcommit.ErrClosed) {
			t.Errorf("Submit after Close: got %v, want ErrClosed", err)
		}
	})
}

func TestConfigValidateNamesTheBadValue(t *testing.T) {
	_, err := groupcommit.New(groupcommit.Config{MaxItems: 10, MaxPending: 5}, (&double{}).flush)
	if err == nil || !strings.Contains(err.Error(), "MaxPending (5) is below MaxItems (10)") {
		t.Errorf("New: got %v, want it to name MaxPending and MaxItems", err)
	}
}

func TestWithDefaultsFillsEachZeroField(t *testing.T) {
	d := groupcommit.DefaultConfig()
	tests := []struct {
		name string
		in   groupcommit.Config
		want groupcommit.Config
	}{
		{"zero", groupcommit.Config{}, d},
		{"window set", groupcommit.Config{Window: time.Millisecond},
			groupcommit.Config{Window: time.Millisecond, MaxItems: d.MaxItems, MaxPending: d.MaxPending, FlushTimeout: d.FlushTimeout, MaxInflight: 1}},
		{"max items above the default pending", groupcommit.Config{MaxItems: 2 * d.MaxPending},
			groupcommit.Config{Window: d.Window, MaxItems: 2 * d.MaxPending, MaxPending: 2 * d.MaxPending, FlushTimeout: d.FlushTimeout, MaxInflight: 1}},
		{"all set", groupcommit.Config{Window: 1, MaxItems: 2, MaxPending: 3, FlushTimeout: 4, MaxInflight: 5},
			groupcommit.Config{Window: 1, MaxItems: 2, MaxPending: 3, FlushTimeout: 4, MaxInflight: 5}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.in.WithDefaults()); diff != "" {
			t.Errorf("%s: WithDefaults (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestWithDefaultsFromFillsZeroFieldsFromTheUsersDefaults(t *testing.T) {
	d := groupcommit.DefaultConfig()
	mine := groupcommit.Config{Window: time.Millisecond, MaxInflight: 16} // a user's defaults, partly set
	tests := []struct {
		name string
		in   groupcommit.Config
		want groupcommit.Config
	}{
		{"zero", groupcommit.Config{}, groupcommit.Config{Window: time.Millisecond, MaxItems: d.MaxItems, MaxPending: d.MaxPending, FlushTimeout: d.FlushTimeout, MaxInflight: 16}},
		{"window set", groupcommit.Config{Window: time.Second},
			groupcommit.Config{Window: time.Second, MaxItems: d.MaxItems, MaxPending: d.MaxPending, FlushTimeout: d.FlushTimeout, MaxInflight: 16}},
		{"max items above the default pending", groupcommit.Config{MaxItems: 2 * d.MaxPending},
			groupcommit.Config{Window: time.Millisecond, MaxItems: 2 * d.MaxPending, MaxPending: 2 * d.MaxPending, FlushTimeout: d.FlushTimeout, MaxInflight: 16}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.in.WithDefaultsFrom(mine)); diff != "" {
			t.Errorf("%s: WithDefaultsFrom (-want +got):\n%s", tt.name, diff)
		}
	}
	withPending := groupcommit.Config{MaxPending: 50, MaxItems: 10}
	if got := (groupcommit.Config{MaxItems: 80}).WithDefaultsFrom(withPending).MaxPending; got != 80 {
		t.Errorf("MaxItems 80 with the user's MaxPending 50: MaxPending %d, want 80 (never below MaxItems)", got)
	}
}

func TestMaxInflightBoundsTheFlushesUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, most atomic.Int64
		release := make(chan struct{})
		b := newBatcher(t, groupcommit.Config{Window: time.Millisecond, MaxItems: 1, MaxInflight: 3}, func(_ context.Context, items []int) ([]int, error) {
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			running.Add(-1)
			return items, nil
		})
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				if _, err := b.Submit(t.Context(), []int{i}); err != nil {
					t.Errorf("Submit: %v", err)
				}
			})
		}
		// Every window passes: the batcher starts what its slots allow.
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := running.Load(); got != 3 {
			t.Errorf("%d flushes under way with 10 single items waiting, want MaxInflight = 3", got)
		}
		close(release)
		wg.Wait()
		if got := most.Load(); got != 3 {
			t.Errorf("at most %d flushes ran at once, want 3", got)
		}
	})
}

func TestOneFlushFailingDoesNotFailAnotherUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		first := make(chan struct{})
		b := newBatcher(t, groupcommit.Config{Window: time.Millisecond, MaxInflight: 2}, func(_ context.Context, items []int) ([]int, error) {
			if items[0] == 1 {
				<-first // still under way when the second flush starts
				return nil, boom
			}
			return items, nil
		})
		errs := make(chan error, 1)
		go func() { _, err := b.Submit(t.Context(), []int{1}); errs <- err }()
		synctest.Wait()
		got, err := b.Submit(t.Context(), []int{2, 3})
		if err != nil {
			t.Errorf("Submit of the second batch: %v, want its own results", err)
		}
		if diff := cmp.Diff([]int{2, 3}, got); diff != "" {
			t.Errorf("second batch (-want +got):\n%s", diff)
		}
		close(first)
		if err := <-errs; !errors.Is(err, boom) {
			t.Errorf("Submit of the first batch: got %v, want boom", err)
		}
	})
}

func TestValidateRefusesNoInflightFlush(t *testing.T) {
	c := groupcommit.DefaultConfig()
	c.MaxInflight = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "MaxInflight is -1") {
		t.Errorf("Validate: got %v, want it to name MaxInflight", err)
	}
}

func TestOldestIsTheFirstSubmissionStillWithoutItsResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{}, 8)
		b := newBatcher(t, groupcommit.Config{Window: time.Millisecond, MaxItems: 1, MaxInflight: 2}, func(_ context.Context, items []int) ([]int, error) {
			<-release
			return items, nil
		})
		if at, ok := b.Oldest(); ok {
			t.Fatalf("Oldest of an idle batcher = %v, true; want false", at)
		}
		start := time.Now()
		var wg sync.WaitGroup
		submit := func(v int) {
			wg.Go(func() {
				if _, err := b.Submit(t.Context(), []int{v}); err != nil {
					t.Errorf("Submit: %v", err)
				}
			})
		}
		// Three submissions 1s apart: two flushes under way, one waiting.
		for v := range 3 {
			submit(v)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if at, ok := b.Oldest(); !ok || !at.Equal(start) {
			t.Errorf("Oldest with the first submission's flush under way = %v, %v; want %v (the first submission)", at.Sub(start), ok, time.Duration(0))
		}
		// The first flush returns: the oldest is the second submission,
		// still flushing.
		release <- struct{}{}
		synctest.Wait()
		if at, ok := b.Oldest(); !ok || at.Sub(start) != time.Second {
			t.Errorf("Oldest after the first flush = %v, %v; want 1s (the second submission, under way)", at.Sub(start), ok)
		}
		release <- struct{}{}
		synctest.Wait()
		if at, ok := b.Oldest(); !ok || at.Sub(start) != 2*time.Second {
			t.Errorf("Oldest after the second flush = %v, %v; want 2s (the third submission)", at.Sub(start), ok)
		}
		release <- struct{}{}
		wg.Wait()
		synctest.Wait()
		if at, ok := b.Oldest(); ok {
			t.Errorf("Oldest once every submission has its result = %v, true; want false", at.Sub(start))
		}
	})
}
