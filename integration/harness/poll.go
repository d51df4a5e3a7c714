package harness

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

const (
	pollFirstDelay = 10 * time.Millisecond
	pollMaxDelay   = 250 * time.Millisecond
)

// errNotYet is what Poll reports when ctx ends before cond was ever called
// to completion.
var errNotYet = errors.New("condition never evaluated")

// Poll calls cond until it returns nil or ctx is done, backing off from 10 ms
// to 250 ms between calls. cond gets ctx so that its own calls end with the
// deadline. On timeout the error wraps ctx.Err() and names cond's last error.
func Poll(ctx context.Context, cond func(ctx context.Context) error) error {
	delay := pollFirstDelay
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
		delay = min(delay*3/2, pollMaxDelay)
	}
}

// Eventually polls cond (see Poll) until it returns nil and fails the test if
// that does not happen within timeout or before the test's context ends. It
// must be called from the test goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := Poll(ctx, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// withDefaultTimeout bounds ctx by d unless it already ends sooner.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
