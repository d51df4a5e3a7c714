package raftnet

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

var (
	// ErrInvalidConfig wraps every Config.Validate error.
	ErrInvalidConfig = errors.New("raftnet: invalid config")
	// ErrNoPreVote: the inner transport does not implement
	// raft.WithPreVote; wrapping it would turn pre-vote on with a
	// transport that cannot send it.
	ErrNoPreVote = errors.New("raftnet: inner transport does not implement raft.WithPreVote")
)

// Config bounds the waits for an unreachable peer.
type Config struct {
	// MaxWait is the longest one call waits for a peer that refuses
	// connections before its error is returned. Negative turns waiting
	// off; zero takes DefaultConfig's.
	MaxWait time.Duration
	// PollInterval is how often a waiting call retries; zero takes
	// DefaultConfig's.
	PollInterval time.Duration
	// Logger gets an info line when a peer accepts again after a wait,
	// and a debug line when a wait gives up; nil discards.
	Logger *slog.Logger
}

// DefaultConfig waits up to 5 s (half the TCP transport's 10 s I/O timeout,
// so no call takes longer than one Raft already tolerates), retrying every
// 25 ms.
func DefaultConfig() Config {
	return Config{MaxWait: 5 * time.Second, PollInterval: 25 * time.Millisecond}
}

// WithDefaults returns c with each zero field set from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.MaxWait == 0 {
		c.MaxWait = d.MaxWait
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	return c
}

// Validate reports bad values by name (after WithDefaults).
func (c Config) Validate() error {
	var errs []error
	if c.MaxWait > time.Minute {
		errs = append(errs, fmt.Errorf("%w: MaxWait %v must be at most 1m (negative: off)", ErrInvalidConfig, c.MaxWait))
	}
	if c.MaxWait > 0 && (c.PollInterval < time.Millisecond || c.PollInterval > c.MaxWait) {
		errs = append(errs, fmt.Errorf("%w: PollInterval %v must be within [1ms, MaxWait %v]", ErrInvalidConfig, c.PollInterval, c.MaxWait))
	}
	return errors.Join(errs...)
}

// Transport is a raft.Transport (with pre-vote and Close) that waits for a
// refusing peer on AppendEntries and InstallSnapshot. See the package doc.
type Transport struct {
	inner raft.Transport
	cfg   Config
	log   *slog.Logger

	mu      sync.Mutex
	stopped bool                                 // StopWaiting or Close was called
	stopCh  chan struct{}                        // closed by StopWaiting
	cancels map[raft.ServerAddress]chan struct{} // per peer; closed by Cancel and CancelAll
}

// New wraps inner, which must implement raft.WithPreVote (hashicorp/raft's
// NetworkTransport and InmemTransport do). Zero fields of cfg take
// DefaultConfig's.
func New(inner raft.Transport, cfg Config) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, ok := inner.(raft.WithPreVote); !ok {
		return nil, ErrNoPreVote
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Transport{inner: inner, cfg: cfg, log: log, stopCh: make(chan struct{}), cancels: make(map[raft.ServerAddress]chan struct{})}, nil
}

// refused reports whether err is a dial that the peer refused: the request
// was not sent, so the call can be repeated as it is.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED)
}

// cancelCh returns the channel that ends waits for target, or nil once
// waiting has stopped for good.
func (t *Transport) cancelCh(target raft.ServerAddress) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return nil
	}
	ch, ok := t.cancels[target]
	if !ok {
		ch = make(chan struct{})
		t.cancels[target] = ch
	}
	return ch
}

// retry makes call, and while the peer refuses connections makes it again
// every PollInterval until it accepts or the wait ends (package doc).
func (t *Transport) retry(target raft.ServerAddress, call func() error) error {
	err := call()
	if err == nil || t.cfg.MaxWait < 0 || !refused(err) {
		return err
	}
	cancel := t.cancelCh(target)
	if cancel == nil {
		return err
	}
	start := time.Now()
	deadline := time.NewTimer(t.cfg.MaxWait)
	defer deadline.Stop()
	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()
	for tries := 1; ; tries++ {
		select {
		case <-deadline.C:
			t.log.Debug("peer still refuses connections; giving up the wait", "peer", target, "waited", time.Since(start), "tries", tries)
			return err
		case <-cancel:
			return err
		case <-t.stopCh:
			return err
		case <-tick.C:
		}
		if err = call(); !refused(err) {
			t.log.Info("peer accepts connections again", "peer", target, "waited", time.Since(start), "tries", tries+1, "error", err)
			return err
		}
	}
}

// Cancel ends the waits for target now (the peer was removed). Later calls
// to target may wait again.
func (t *Transport) Cancel(target raft.ServerAddress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.cancels[target]; ok {
		close(ch)
		delete(t.cancels, target)
	}
}

// CancelAll ends every wait now (this node stopped leading). Later calls
// may wait again.
func (t *Transport) CancelAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for a, ch := range t.cancels {
		close(ch)
		delete(t.cancels, a)
	}
}

// StopWaiting ends every wait and turns waiting off for good: call it
// before raft.Shutdown, which waits for the goroutines that may be
// waiting here.
func (t *Transport) StopWaiting() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		close(t.stopCh)
	}
}

// Close stops waiting and closes the inner transport if it can be closed.
func (t *Transport) Close() error {
	t.StopWaiting()
	if c, ok := t.inner.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// AppendEntries waits for a refusing peer (package doc).
func (t *Transport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.retry(target, func() error { return t.inner.AppendEntries(id, target, args, resp) })
}

// InstallSnapshot waits for a refusing peer (package doc): a refused dial
// has not read from data yet.
func (t *Transport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.retry(target, func() error { return t.inner.InstallSnapshot(id, target, args, resp, data) })
}

// Consumer is the inner transport's.
func (t *Transport) Consumer() <-chan raft.RPC { return t.inner.Consumer() }

// LocalAddr is the inner transport's.
func (t *Transport) LocalAddr() raft.ServerAddress { return t.inner.LocalAddr() }

// AppendEntriesPipeline is passed through: Raft falls back to AppendEntries
// when it fails.
func (t *Transport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	return t.inner.AppendEntriesPipeline(id, target)
}

// RequestVote is passed through: elections never wait.
func (t *Transport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.inner.RequestVote(id, target, args, resp)
}

// RequestPreVote is passed through: elections never wait.
func (t *Transport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.inner.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

// TimeoutNow is passed through: leadership transfers never wait.
func (t *Transport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.inner.TimeoutNow(id, target, args, resp)
}

// EncodePeer is the inner transport's.
func (t *Transport) EncodePeer(id raft.ServerID, addr raft.ServerAddress) []byte {
	return t.inner.EncodePeer(id, addr)
}

// DecodePeer is the inner transport's.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return t.inner.DecodePeer(b) }

// SetHeartbeatHandler is the inner transport's.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) { t.inner.SetHeartbeatHandler(cb) }

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
)
