package harness

import (
	"context"
	"testing"
	"time"

	"github.com/regcenter/registry/internal/poll"
)

// Poll is poll.Until, kept for callers not yet moved over; new code calls
// poll.Until.
func Poll(ctx context.Context, cond func(ctx context.Context) error) error {
	return poll.Until(ctx, cond)
}

// Eventually is poll.Eventually, kept for callers not yet moved over; new
// code calls poll.Eventually. It must be called from the test goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	poll.Eventually(t, timeout, cond)
}
