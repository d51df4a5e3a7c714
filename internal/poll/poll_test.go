package poll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestUntilReturnsOnceCondHolds(t *testing.T) {
	calls := 0
	err := Until(t.Context(), func(context.Context) error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestUntilNamesTheLastErrorOnTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := Until(ctx, func(context.Context) error { return errors.New("not yet: 7") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not yet: 7") {
		t.Fatalf("Until = %v, want DeadlineExceeded naming the last error", err)
	}
}

// fakeTB records what Eventually reports.
type fakeTB struct {
	ctx    context.Context
	failed string
}

func (f *fakeTB) Helper()                  {}
func (f *fakeTB) Context() context.Context { return f.ctx }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	var _ TB = t // *testing.T satisfies TB

	ok := &fakeTB{ctx: t.Context()}
	n := 0
	Eventually(ok, time.Second, func(context.Context) error {
		if n++; n < 2 {
			return errors.New("first call")
		}
		return nil
	})
	if ok.failed != "" {
		t.Errorf("Eventually failed a condition that holds on the second call: %s", ok.failed)
	}

	never := &fakeTB{ctx: t.Context()}
	Eventually(never, 30*time.Millisecond, func(context.Context) error { return errors.New("still 0 of 3") })
	if !strings.Contains(never.failed, "within 30ms") || !strings.Contains(never.failed, "still 0 of 3") {
		t.Errorf("Eventually reported %q, want the timeout and the last error", never.failed)
	}
}

func TestWithDefaultTimeout(t *testing.T) {
	short, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	ctx, cancel2 := WithDefaultTimeout(short, time.Hour)
	defer cancel2()
	if d, _ := ctx.Deadline(); time.Until(d) > time.Second {
		t.Errorf("deadline in %v, want the caller's (1s) kept", time.Until(d))
	}
	ctx, cancel3 := WithDefaultTimeout(t.Context(), time.Second)
	defer cancel3()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > time.Second {
		t.Errorf("deadline %v (set %v), want within 1s", d, ok)
	}
}
