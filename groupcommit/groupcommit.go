package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/regcenter/registry/internal/defaults"
)

var (
	// ErrOverloaded is returned by Submit when MaxPending items are already
	// waiting.
	ErrOverloaded = errors.New("too many items are waiting to be flushed")
	// ErrClosed is returned by Submit after Close.
	ErrClosed = errors.New("batcher is closed")
)

// Config tunes a Batcher.
type Config struct {
	// Window is the least time between the starts of two flushes, and so the
	// longest an item waits for the next flush to start once the previous
	// one finished. Default 10ms.
	Window time.Duration
	// MaxItems bounds one flush. A submission larger than MaxItems is
	// flushed alone. Default 10,000.
	MaxItems int
	// MaxPending bounds the items waiting for a flush. Default 200,000.
	MaxPending int
	// FlushTimeout bounds one flush. Default 10s.
	FlushTimeout time.Duration
	// MaxInflight bounds the flushes under way at once. With 1 a batch
	// gathers while the previous flush runs and starts when it ends; with
	// more, a new batch starts (a Window after the previous start) while
	// earlier ones are still under way, as a Raft leader pipelines its
	// entries. Each submission still waits for its own flush only.
	// Default 1.
	MaxInflight int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Window: 10 * time.Millisecond, MaxItems: 10_000, MaxPending: 200_000, FlushTimeout: 10 * time.Second, MaxInflight: 1}
}

// WithDefaults returns c with each zero field set to its default. A zero
// MaxPending becomes the larger of its default and MaxItems.
func (c Config) WithDefaults() Config {
	defaults.Set(&c.MaxPending, max(DefaultConfig().MaxPending, c.MaxItems))
	defaults.Fill(&c, DefaultConfig())
	return c
}

// WithDefaultsFrom returns c with each zero field set from d, a user's own
// defaults (a zero field of d leaves DefaultConfig's). A zero MaxPending
// becomes the larger of d's and MaxItems, as in WithDefaults.
func (c Config) WithDefaultsFrom(d Config) Config {
	pending := c.MaxPending
	defaults.Fill(&c, d)
	if pending == 0 && d.MaxPending != 0 {
		c.MaxPending = max(d.MaxPending, c.MaxItems)
	}
	return c.WithDefaults()
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Window < 0:
		return fmt.Errorf("groupcommit: Window is negative (%v)", c.Window)
	case c.MaxItems < 1:
		return fmt.Errorf("groupcommit: MaxItems is %d, it must be at least 1", c.MaxItems)
	case c.MaxPending < c.MaxItems:
		return fmt.Errorf("groupcommit: MaxPending (%d) is below MaxItems (%d)", c.MaxPending, c.MaxItems)
	case c.FlushTimeout <= 0:
		return fmt.Errorf("groupcommit: FlushTimeout must be positive, got %v", c.FlushTimeout)
	case c.MaxInflight < 1:
		return fmt.Errorf("groupcommit: MaxInflight is %d, it must be at least 1", c.MaxInflight)
	}
	return nil
}

// FlushFunc handles one batch. It returns one result per item, in order,
// or an error that fails every item of the batch.
type FlushFunc[T, R any] func(ctx context.Context, items []T) ([]R, error)

type submission[T, R any] struct {
	items []T
	at    time.Time       // when Submit queued it
	done  chan outcome[R] // buffered: the flusher never blocks on it
}

type outcome[R any] struct {
	results []R
	err     error
}

// Batcher group-commits items of type T into flushes that yield results of
// type R.
type Batcher[T, R any] struct {
	cfg   Config
	flush FlushFunc[T, R]

	mu      sync.Mutex
	pending []submission[T, R]
	count   int           // items in pending
	wake    chan struct{} // capacity 1: pending became non-empty or large
	closed  bool
	// flushing holds, for each flush under way, when its oldest
	// submission was queued (see Oldest).
	flushing  map[uint64]time.Time
	lastFlush uint64 // the id of the last flush started

	slots chan struct{} // capacity MaxInflight: a token per flush under way

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a Batcher. Zero fields of cfg take the defaults.
func New[T, R any](cfg Config, flush FlushFunc[T, R]) (*Batcher[T, R], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher[T, R]{cfg: cfg, flush: flush, wake: make(chan struct{}, 1),
		flushing: make(map[uint64]time.Time, cfg.MaxInflight),
		slots:    make(chan struct{}, cfg.MaxInflight), ctx: ctx, cancel: cancel}
	b.wg.Add(1)
	go b.run()
	return b, nil
}

// Submit queues items for the next flush and waits for their results. If
// ctx ends first Submit returns its error, but the items may still be
// flushed.
func (b *Batcher[T, R]) Submit(ctx context.Context, items []T) ([]R, error) {
	if len(items) == 0 {
		return nil, nil
	}
	s := submission[T, R]{items: items, done: make(chan outcome[R], 1)}
	b.mu.Lock()
	s.at = time.Now() // under mu: pending stays in the order of at
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, ErrClosed
	case b.count > 0 && b.count+len(items) > b.cfg.MaxPending:
		b.mu.Unlock()
		return nil, ErrOverloaded
	}
	b.pending = append(b.pending, s)
	b.count += len(items)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case o := <-s.done:
		return o.results, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Oldest returns when the oldest submission that has no result yet was
// queued: the first one waiting for a flush, or the oldest of a flush
// under way. ok is false when every submission has its result. A flush's
// submissions leave only once the flush returned, so an item is always
// either waiting here or flushed.
func (b *Batcher[T, R]) Oldest() (at time.Time, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) > 0 {
		at, ok = b.pending[0].at, true
	}
	for _, t := range b.flushing {
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	return at, ok
}

// Close fails the waiting submissions with ErrClosed, stops the flusher and
// waits for it and for every flush under way, which it cancels.
func (b *Batcher[T, R]) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	pending := b.pending
	b.pending, b.count = nil, 0
	b.mu.Unlock()
	for _, s := range pending {
		s.done <- outcome[R]{err: ErrClosed}
	}
	b.cancel()
	b.wg.Wait()
}

func (b *Batcher[T, R]) run() {
	defer b.wg.Done()
	var lastStart time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// Wait for work.
		select {
		case <-b.ctx.Done():
			return
		case <-b.wake:
		}
		// Let the window fill, unless a full batch is already waiting.
		if wait := b.cfg.Window - time.Since(lastStart); wait > 0 && !b.full() {
			timer.Reset(wait)
			select {
			case <-b.ctx.Done():
				return
			case <-timer.C:
			}
		}
		for {
			// Wait for a free slot before taking the batch, so that the
			// batch holds everything that arrived meanwhile.
			select {
			case <-b.ctx.Done():
				return
			case b.slots <- struct{}{}:
			}
			batch, id := b.take()
			if len(batch) == 0 {
				<-b.slots
				break
			}
			lastStart = time.Now()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() { <-b.slots }()
				b.flushBatch(batch, id)
			}()
			if !b.full() {
				break
			}
		}
		// Anything left waits for the next window.
		b.mu.Lock()
		if b.count > 0 {
			select {
			case b.wake <- struct{}{}:
			default:
			}
		}
		b.mu.Unlock()
	}
}

func (b *Batcher[T, R]) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count >= b.cfg.MaxItems
}

// take removes whole submissions from the queue, up to MaxItems items (at
// least one submission), as the flush id.
func (b *Batcher[T, R]) take() ([]submission[T, R], uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, items := 0, 0
	for n < len(b.pending) && (n == 0 || items+len(b.pending[n].items) <= b.cfg.MaxItems) {
		items += len(b.pending[n].items)
		n++
	}
	batch := b.pending[:n:n]
	b.pending = b.pending[n:]
	b.count -= items
	if n > 0 {
		b.lastFlush++
		b.flushing[b.lastFlush] = batch[0].at
	}
	if len(b.pending) == 0 {
		b.pending = nil // let the backing array go
	}
	return batch, b.lastFlush
}

func (b *Batcher[T, R]) flushBatch(batch []submission[T, R], id uint64) {
	var items []T
	if len(batch) == 1 {
		items = batch[0].items
	} else {
		for _, s := range batch {
			items = append(items, s.items...)
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.FlushTimeout)
	results, err := b.flush(ctx, items)
	cancel()
	b.mu.Lock()
	delete(b.flushing, id)
	b.mu.Unlock()
	if err == nil && len(results) != len(items) {
		err = fmt.Errorf("groupcommit: flush returned %d results for %d items", len(results), len(items))
	}
	off := 0
	for _, s := range batch {
		if err != nil {
			s.done <- outcome[R]{err: err}
			continue
		}
		s.done <- outcome[R]{results: results[off : off+len(s.items) : off+len(s.items)]}
		off += len(s.items)
	}
}
