package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	firstDelay = 10 * time.Millisecond
	maxDelay   = 250 * time.Millisecond
)

// errNotYet is what Until reports when ctx ends before cond was ever
// called to completion.
var errNotYet = errors.New("condition never evaluated")

// Until calls cond until it returns nil or ctx is done, backing off from
// 10 ms to 250 ms between calls. cond gets ctx so that its own calls end
// with the deadline. On timeout the error wraps ctx.Err() and names cond's
// last error.
func Until(ctx context.Context, cond func(ctx context.Context) error) error {
	delay := firstDelay
	last := errNotYet
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w; last error: %v", err, last)
		}
		err := cond(ctx)
		if err == nil {
			return nil
		}
		last = err
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w; last error: %v", ctx.Err(), last)
		case <-timer.C:
		}
		delay = min(delay*3/2, maxDelay)
	}
}

// TB is the part of testing.TB that Eventually uses.
type TB interface {
	Helper()
	Context() context.Context
	Fatalf(format string, args ...any)
}

// Eventually polls cond (see Until) until it returns nil and fails the
// test with cond's last error if that does not happen within timeout or
// before the test's context ends. It must be called from the test
// goroutine.
func Eventually(t TB, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := Until(ctx, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// WithDefaultTimeout bounds ctx by d unless it already ends sooner.
func WithDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
