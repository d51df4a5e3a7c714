package client

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

const (
	// coalesce: beats due within this much of each other share a frame.
	coalesce = 20 * time.Millisecond
	// checkEvery bounds the time between two looks at the schedule, for
	// Lost and stalled-stream detection.
	checkEvery = 100 * time.Millisecond
	// refSlab is how many InstanceRefs collect allocates at once.
	refSlab = 128
)

// beatState is the beater's view of one registration.
type beatState struct {
	reg           *Registration
	incarnation   uint64
	own           time.Duration // the interval the application asked for
	interval      time.Duration // the interval in use (the server may ask for more)
	suspectAfter  time.Duration
	ttl           time.Duration
	next          time.Time // when the next beat is due
	lastAck       time.Time // when the last acknowledged beat was sent
	lost          bool
	reregistering bool
	idx           int // position in the due heap; -1 when not scheduled
}

// frame is a sent beat frame awaiting its answer.
type frame struct {
	states []*beatState
	incs   []uint64
	sent   time.Time
}

// beater owns the client's one beat stream: it sends the beats of every
// registration, each at its own interval, on one stream to one node, and
// re-opens the stream on another node when it breaks.
type beater struct {
	c    *Client
	wake chan struct{} // capacity 1

	mu       sync.Mutex
	states   map[*Registration]*beatState
	due      dueHeap
	inflight map[uint64]*frame
	seq      uint64
	retries  int // frames answered with a BeatRetry since the last acknowledged one
	// lostChecked is when checkLost last looked at every registration:
	// it does so at most every checkEvery, not on every wake-up (a scan of
	// all registrations per frame sent cost most of a busy client's CPU).
	lostChecked time.Time
}

func newBeater(c *Client) *beater {
	return &beater{c: c, wake: make(chan struct{}, 1), states: make(map[*Registration]*beatState), inflight: make(map[uint64]*frame)}
}

func (b *beater) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *beater) add(r *Registration) {
	now := time.Now()
	st := &beatState{
		reg:          r,
		incarnation:  r.spec.Incarnation,
		own:          r.spec.BeatInterval.AsDuration(),
		interval:     r.spec.BeatInterval.AsDuration(),
		suspectAfter: r.spec.SuspectAfter.AsDuration(),
		ttl:          r.spec.Ttl.AsDuration(),
		next:         now.Add(r.spec.BeatInterval.AsDuration()),
		lastAck:      now,
	}
	b.mu.Lock()
	b.states[r] = st
	heap.Push(&b.due, st)
	b.mu.Unlock()
	b.poke()
}

// remove stops beating r and returns its incarnation; false if it was not
// (or no longer) beating.
func (b *beater) remove(r *Registration) (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.states[r]
	if !ok {
		return 0, false
	}
	delete(b.states, r)
	if st.idx >= 0 {
		heap.Remove(&b.due, st.idx)
	}
	return st.incarnation, true
}

func (b *beater) registrations() []*Registration {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Registration, 0, len(b.states))
	for r := range b.states {
		out = append(out, r)
	}
	return out
}

func (b *beater) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.states) == 0
}

// run keeps a beat stream open while there is anything to beat.
func (b *beater) run(ctx context.Context) {
	attempt := 0
	for {
		for b.idle() {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
			}
		}
		addr := b.c.endpoint()
		progress, err := b.stream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if progress {
			attempt = 0
		}
		if err == nil {
			continue
		}
		if d, ok := retryDelay(err); ok {
			// Over this client's write rate: reopen on the same node after
			// the delay it asked for.
			b.c.log.Info("beat stream rate-limited; reopening after the delay the node asked for", "endpoint", addr, "retry_after", d)
			if sleep(ctx, d) != nil {
				return
			}
			continue
		}
		b.c.log.Info("beat stream broke; reopening on another node", "endpoint", addr, "error", err)
		if sleep(ctx, b.c.backoff(attempt)) != nil {
			return
		}
		attempt++
		b.c.failover(addr)
	}
}

// errStalled means a frame went unanswered for CallTimeout.
var errStalled = errors.New("beat stream stalled: a frame was not answered in time")

// stream beats on one stream until it breaks (an error) or nothing is left
// to beat (nil). progress reports whether any frame was answered.
func (b *beater) stream(ctx context.Context, addr string) (bool, error) {
	cc, err := b.c.conn(addr)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := registryv1.NewRegistryClient(cc).BeatStream(sctx)
	if err != nil {
		return false, err
	}
	// Beats sent on the last stream may be lost: beat everything now.
	now := time.Now()
	b.mu.Lock()
	clear(b.inflight)
	for _, s := range b.due {
		s.next = now
	}
	heap.Init(&b.due)
	b.mu.Unlock()

	var progress atomic.Bool
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred above, so it runs later): Recv returns
	defer cancel()
	wg.Go(func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			b.handle(resp)
			progress.Store(true)
		}
	})

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		frames, next, stalled := b.collect(now)
		for _, f := range frames {
			if err := st.Send(f); err != nil {
				return progress.Load(), err
			}
		}
		if stalled {
			return progress.Load(), errStalled
		}
		b.checkLost(now)
		if b.idle() {
			st.CloseSend()
			return progress.Load(), nil
		}
		timer.Reset(max(0, min(next.Sub(now), checkEvery)))
		select {
		case <-timer.C:
		case <-b.wake:
		case err := <-recvErr:
			return progress.Load(), err
		case <-ctx.Done():
			return progress.Load(), ctx.Err()
		}
	}
}

// collect takes the beats due by now (plus coalesce) off the schedule and
// returns them as frames, with when the next beat is due, and whether a
// frame has gone unanswered for CallTimeout.
func (b *beater) collect(now time.Time) ([]*registryv1.BeatRequest, time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var (
		frames []*registryv1.BeatRequest
		req    *registryv1.BeatRequest
		f      *frame
	)
	// The InstanceRefs come from slabs of refSlab: one allocation per
	// slab, not one per beat.
	var refs []registryv1.InstanceRef
	for len(b.due) > 0 && !b.due[0].next.After(now.Add(coalesce)) {
		s := b.due[0]
		if req == nil || len(req.Beats) == b.c.cfg.MaxBeatsPerFrame {
			b.seq++
			req = &registryv1.BeatRequest{Seq: b.seq}
			f = &frame{sent: now}
			b.inflight[b.seq] = f
			frames = append(frames, req)
		}
		if len(refs) == cap(refs) {
			refs = make([]registryv1.InstanceRef, 0, refSlab)
		}
		refs = refs[:len(refs)+1]
		ref := &refs[len(refs)-1]
		ref.Service, ref.Id, ref.Incarnation = s.reg.spec.Service, s.reg.spec.Id, s.incarnation
		req.Beats = append(req.Beats, ref)
		f.states = append(f.states, s)
		f.incs = append(f.incs, s.incarnation)
		s.next = now.Add(s.interval)
		heap.Fix(&b.due, 0) // one sift-down instead of a Pop and a Push
	}
	next := now.Add(checkEvery)
	if len(b.due) > 0 {
		next = b.due[0].next
	}
	stalled := false
	for _, f := range b.inflight {
		if now.Sub(f.sent) > b.c.cfg.CallTimeout {
			stalled = true
		}
	}
	return frames, next, stalled
}

// handle applies the answer to one frame.
func (b *beater) handle(resp *registryv1.BeatResponse) {
	if resp.Retry != nil {
		b.retry(resp)
		return
	}
	type key struct {
		service, id string
		inc         uint64
	}
	rejected := make(map[key]*registryv1.BeatRejection, len(resp.Rejected))
	for _, rj := range resp.Rejected {
		in := rj.GetInstance()
		rejected[key{in.GetService(), in.GetId(), in.GetIncarnation()}] = rj
	}
	recommended := resp.GetRecommendedInterval().AsDuration()

	var superseded []*Registration
	b.mu.Lock()
	f := b.inflight[resp.Seq]
	delete(b.inflight, resp.Seq)
	if f == nil {
		b.mu.Unlock()
		return
	}
	b.retries = 0
	for i, s := range f.states {
		if b.states[s.reg] != s || s.incarnation != f.incs[i] {
			continue // removed, or re-registered since this frame
		}
		rj := rejected[key{s.reg.spec.Service, s.reg.spec.Id, f.incs[i]}]
		switch {
		case rj == nil:
			if f.sent.After(s.lastAck) {
				s.lastAck = f.sent
			}
			if s.lost {
				s.lost = false
				s.reg.emit(Reacquired, s.incarnation, "")
			}
			s.interval = s.own
			if recommended > s.own {
				s.interval = min(recommended, s.ttl/validate.TTLIntervalFactor)
			}
		case rj.Reason == registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED && rj.CurrentIncarnation > s.incarnation:
			// Another process registered this id with a higher
			// incarnation: it owns the id now.
			delete(b.states, s.reg)
			if s.idx >= 0 {
				heap.Remove(&b.due, s.idx)
			}
			superseded = append(superseded, s.reg)
		default:
			b.reregister(s, max(s.incarnation, rj.CurrentIncarnation)+1, rj.Reason.String())
		}
	}
	b.mu.Unlock()
	if fn := b.c.cfg.OnBeatAck; fn != nil {
		fn(len(f.states)-len(resp.Rejected), time.Since(f.sent))
	}
	for _, r := range superseded {
		r.end(r.spec.Incarnation, "superseded by a higher incarnation")
	}
}

// retry handles a frame the node could not commit because of leadership
// (no leader yet, not the leader, leadership lost): the stream is fine, so
// the frame's beats are sent again on it after a backoff that grows with
// consecutive retried frames. The node forwards them once it knows the new
// leader; the stream is reopened only if it breaks or stalls.
func (b *beater) retry(resp *registryv1.BeatResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.inflight[resp.Seq]
	delete(b.inflight, resp.Seq)
	if f == nil {
		return
	}
	b.c.log.Debug("beat frame not committed; resending it", "reason", resp.Retry.GetMessage(), "beats", len(f.states))
	again := time.Now().Add(b.c.backoff(b.retries))
	b.retries++
	for i, s := range f.states {
		if b.states[s.reg] != s || s.incarnation != f.incs[i] || s.idx < 0 {
			continue // removed, re-registered or re-registering since this frame
		}
		if again.Before(s.next) {
			s.next = again
			heap.Fix(&b.due, s.idx)
		}
	}
	b.poke()
}

// checkLost emits Lost for registrations with no acknowledged beat for
// their suspect_after.
func (b *beater) checkLost(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lostChecked) < checkEvery {
		return
	}
	b.lostChecked = now
	for _, s := range b.states {
		if !s.lost && now.Sub(s.lastAck) > s.suspectAfter {
			s.lost = true
			s.reg.emit(Lost, s.incarnation, "")
		}
	}
}

// reregister registers s again at incarnation inc after a jittered delay
// of up to half its interval, retrying until it succeeds, the registration
// ends or the client closes. Callers hold b.mu.
func (b *beater) reregister(s *beatState, inc uint64, why string) {
	if s.reregistering {
		return
	}
	s.reregistering = true
	if s.idx >= 0 {
		heap.Remove(&b.due, s.idx)
	}
	c := b.c
	delay := c.backoffUpTo(s.own / 2)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if sleep(c.ctx, delay) != nil {
			return
		}
		spec := s.reg.withIncarnation(inc)
		err := c.register(c.ctx, spec)
		b.mu.Lock()
		if b.states[s.reg] != s {
			b.mu.Unlock()
			return // deregistered meanwhile
		}
		if err != nil {
			delete(b.states, s.reg)
			b.mu.Unlock()
			if c.ctx.Err() == nil {
				c.log.Warn("re-registration failed; giving up on this instance", "service", spec.Service, "instance_id", spec.Id, "error", err)
				s.reg.end(inc, fmt.Sprintf("re-registration failed: %v", err))
			}
			return
		}
		s.incarnation, s.reg.spec.Incarnation = inc, inc
		s.reregistering, s.lost = false, false
		s.lastAck = time.Now()
		s.next = s.lastAck.Add(s.interval)
		heap.Push(&b.due, s)
		b.mu.Unlock()
		b.poke()
		c.log.Info("re-registered", "service", spec.Service, "instance_id", spec.Id, "incarnation", inc, "reason", why)
		s.reg.emit(Reregistered, inc, why)
	}()
}

// backoffUpTo returns a random duration in [0, d].
func (c *Client) backoffUpTo(d time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.rng.Int64N(int64(d) + 1))
}

// dueHeap orders beat states by when they are due.
type dueHeap []*beatState

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *dueHeap) Push(x any) {
	s := x.(*beatState)
	s.idx = len(*h)
	*h = append(*h, s)
}
func (h *dueHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.idx = -1
	return s
}
