package raftnet_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/raftnet"
)

// hashicorp/raft's NetworkTransport does not close the connections it
// accepted when it closes (node/tls.go's stream layer does that for the
// node); their readers end when the dialling side's pool is collected.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/raft.(*NetworkTransport).handleConn"))
}

// refusedErr is what a dial to a closed port returns.
var refusedErr = &net.OpError{Op: "dial", Net: "tcp", Err: &net.OpError{Op: "connect", Err: syscall.ECONNREFUSED}}

// fakeInner answers AppendEntries and InstallSnapshot with answer(target);
// the rest of raft.Transport is not used by these tests.
type fakeInner struct {
	raft.Transport
	answer func(target raft.ServerAddress) error
	calls  atomic.Int64
	closed atomic.Bool
}

func (f *fakeInner) AppendEntries(_ raft.ServerID, target raft.ServerAddress, _ *raft.AppendEntriesRequest, _ *raft.AppendEntriesResponse) error {
	f.calls.Add(1)
	return f.answer(target)
}

func (f *fakeInner) RequestPreVote(raft.ServerID, raft.ServerAddress, *raft.RequestPreVoteRequest, *raft.RequestPreVoteResponse) error {
	return nil
}

func (f *fakeInner) Close() error { f.closed.Store(true); return nil }

func cfg(maxWait time.Duration) raftnet.Config {
	return raftnet.Config{MaxWait: maxWait, PollInterval: 5 * time.Millisecond}
}

func newTransport(t *testing.T, c raftnet.Config, answer func(raft.ServerAddress) error) (*raftnet.Transport, *fakeInner) {
	t.Helper()
	inner := &fakeInner{answer: answer}
	tr, err := raftnet.New(inner, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, inner
}

// appendAsync sends one AppendEntries to target; the channel gets its error.
func appendAsync(tr *raftnet.Transport, target raft.ServerAddress) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- tr.AppendEntries("p", target, &raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{})
	}()
	return done
}

// waitCalls waits until inner has been called at least n times: the call
// under test is retrying.
func waitCalls(t *testing.T, inner *fakeInner, n int64) {
	t.Helper()
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if c := inner.calls.Load(); c < n {
			return fmt.Errorf("%d calls", c)
		}
		return nil
	})
}

func TestARefusingPeerIsRetriedUntilItAccepts(t *testing.T) {
	var up atomic.Bool
	tr, inner := newTransport(t, cfg(time.Minute), func(raft.ServerAddress) error {
		if up.Load() {
			return nil
		}
		return refusedErr
	})
	done := appendAsync(tr, "a")
	waitCalls(t, inner, 3)
	up.Store(true)
	if err := <-done; err != nil {
		t.Fatalf("AppendEntries once the peer accepts: %v, want nil", err)
	}
}

func TestOtherErrorsReturnAtOnce(t *testing.T) {
	for _, err := range []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: errTimeout{}},         // a black hole: the dial already took its timeout
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNREFUSED}, // not a dial: the request may have been sent
		&net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET},  // the peer died under a pooled connection
		errors.New("rpc error: something the peer said"),                // an answer
	} {
		tr, inner := newTransport(t, cfg(time.Minute), func(raft.ServerAddress) error { return err })
		got := tr.AppendEntries("p", "a", &raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{})
		if !errors.Is(got, err) || inner.calls.Load() != 1 {
			t.Errorf("%v: got %v after %d calls, want it back after 1", err, got, inner.calls.Load())
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string { return "i/o timeout" }
func (errTimeout) Timeout() bool { return true }

func TestTheWaitIsBounded(t *testing.T) {
	tr, inner := newTransport(t, cfg(100*time.Millisecond), func(raft.ServerAddress) error { return refusedErr })
	start := time.Now()
	err := tr.AppendEntries("p", "a", &raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after MaxWait: %v, want the refused dial", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("returned after %v, before MaxWait", waited)
	}
	if inner.calls.Load() < 2 {
		t.Errorf("%d calls, want retries within MaxWait", inner.calls.Load())
	}
}

func TestNegativeMaxWaitPassesErrorsThrough(t *testing.T) {
	tr, inner := newTransport(t, raftnet.Config{MaxWait: -1}, func(raft.ServerAddress) error { return refusedErr })
	if err := tr.AppendEntries("p", "a", &raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{}); !errors.Is(err, syscall.ECONNREFUSED) || inner.calls.Load() != 1 {
		t.Fatalf("got %v after %d calls, want the refused dial after 1", err, inner.calls.Load())
	}
}

func TestCancelEndsTheWaitsForThatPeerOnly(t *testing.T) {
	tr, inner := newTransport(t, cfg(time.Minute), func(raft.ServerAddress) error { return refusedErr })
	a, b := appendAsync(tr, "a"), appendAsync(tr, "b")
	waitCalls(t, inner, 4)
	tr.Cancel("a") // a was removed
	if err := <-a; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a after Cancel: %v, want the refused dial", err)
	}
	select {
	case err := <-b:
		t.Fatalf("b returned (%v) when only a was cancelled", err)
	default:
	}
	tr.CancelAll() // this node stopped leading
	if err := <-b; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("b after CancelAll: %v, want the refused dial", err)
	}
	// A cancelled peer may be waited for again (it may be added back).
	again := appendAsync(tr, "a")
	calls := inner.calls.Load()
	waitCalls(t, inner, calls+2)
	tr.Cancel("a")
	<-again
}

func TestStopWaitingEndsWaitsForGood(t *testing.T) {
	tr, inner := newTransport(t, cfg(time.Minute), func(raft.ServerAddress) error { return refusedErr })
	done := appendAsync(tr, "a")
	waitCalls(t, inner, 2)
	tr.StopWaiting()
	if err := <-done; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after StopWaiting: %v, want the refused dial", err)
	}
	before := inner.calls.Load()
	if err := tr.AppendEntries("p", "a", &raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{}); !errors.Is(err, syscall.ECONNREFUSED) || inner.calls.Load() != before+1 {
		t.Fatalf("a call after StopWaiting: %v after %d calls, want the refused dial after 1", err, inner.calls.Load()-before)
	}
}

func TestCloseStopsWaitingAndClosesTheInnerTransport(t *testing.T) {
	tr, inner := newTransport(t, cfg(time.Minute), func(raft.ServerAddress) error { return refusedErr })
	done := appendAsync(tr, "a")
	waitCalls(t, inner, 2)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if !inner.closed.Load() {
		t.Error("the inner transport was not closed")
	}
}

type noPreVote struct{ raft.Transport }

func TestNewChecksItsArguments(t *testing.T) {
	if _, err := raftnet.New(noPreVote{}, raftnet.DefaultConfig()); !errors.Is(err, raftnet.ErrNoPreVote) {
		t.Errorf("inner without pre-vote: %v, want ErrNoPreVote", err)
	}
	for _, c := range []struct {
		cfg  raftnet.Config
		name string
	}{
		{raftnet.Config{MaxWait: time.Hour, PollInterval: time.Millisecond}, "MaxWait"},
		{raftnet.Config{MaxWait: time.Second, PollInterval: time.Microsecond}, "PollInterval"},
		{raftnet.Config{MaxWait: time.Second, PollInterval: 2 * time.Second}, "PollInterval"},
	} {
		err := c.cfg.Validate()
		if !errors.Is(err, raftnet.ErrInvalidConfig) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%+v: %v, want ErrInvalidConfig naming %s", c.cfg, err, c.name)
		}
	}
	if err := raftnet.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	if got, want := (raftnet.Config{}).WithDefaults(), raftnet.DefaultConfig(); got != want {
		t.Errorf("zero Config with defaults: %+v, want %+v", got, want)
	}
	if err := (raftnet.Config{MaxWait: -1}).Validate(); err != nil {
		t.Errorf("waiting off: %v", err)
	}
}

// A real dial to a closed port is recognised (and retried), and the call
// gets through once a transport listens there.
func TestARealRefusedDialIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tcp, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := raftnet.New(tcp, raftnet.Config{MaxWait: 10 * time.Second, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	done := appendAsync(tr, raft.ServerAddress(addr))
	select {
	case err := <-done:
		t.Fatalf("returned %v while nothing listened", err)
	case <-time.After(50 * time.Millisecond): // it is waiting
	}
	peer, err := raft.NewTCPTransport(addr, nil, 1, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case rpc := <-peer.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatalf("AppendEntries once the peer listens: %v, want nil", err)
	}
}
