package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// rawGen is a cheap beat generator for a very large fleet (the scale
// workload): the instances are cut into fixed frames of BeatRequests
// built once and re-sent every interval (only Seq changes), a few streams
// each own a share of the frames and send them spaced over the interval
// from one ticker. Per beat it allocates nothing; per frame sent it
// records one latency sample.
//
// A frame is sent only once it is active (every instance in it
// registered: see registered). A broken stream is reopened on the next
// endpoint and re-sends the frames that were in flight; a frame answered
// with a BeatRetry is sent again after retryAfter.
type rawGen struct {
	endpoints []string
	conn      func(addr string) (*grpc.ClientConn, error)
	interval  time.Duration
	frames    []*rawFrame
	streams   []*rawStream
	rec       rawRecorder

	cancel context.CancelFunc
	wg     sync.WaitGroup

	whyMu sync.Mutex
	why   map[string]int64 // beats rejected by reason, stream breaks by status
}

// note counts n of what (a rejection reason, a stream's end).
func (g *rawGen) note(what string, n int64) {
	g.whyMu.Lock()
	defer g.whyMu.Unlock()
	if g.why == nil {
		g.why = map[string]int64{}
	}
	g.why[what] += n
}

// reasons returns what note counted.
func (g *rawGen) reasons() map[string]int64 {
	g.whyMu.Lock()
	defer g.whyMu.Unlock()
	return maps.Clone(g.why)
}

// rawFrame is one reusable BeatRequest and what the generator knows of it.
type rawFrame struct {
	req        *registryv1.BeatRequest // owned by its stream's sending goroutine
	n          int32
	registered atomic.Int32 // instances of the frame registered so far
	acked      atomic.Bool  // answered once since it became active
}

func (f *rawFrame) active() bool { return f.registered.Load() >= f.n }

// rawStream owns frames[i] for i ≡ idx (mod streams).
type rawStream struct {
	g      *rawGen
	idx    int
	frames []*rawFrame
	breaks atomic.Int64

	mu       sync.Mutex
	seq      uint64
	inflight map[uint64]sent
	resend   []*rawFrame
}

type sent struct {
	f  *rawFrame
	at time.Time
}

const (
	// retryAfter: a frame answered with a BeatRetry is sent again this
	// much later.
	retryAfter = 100 * time.Millisecond
	// rawStallAfter: a frame unanswered this long breaks its stream.
	rawStallAfter = 5 * time.Second
)

// errRawStalled: a frame went unanswered for rawStallAfter.
var errRawStalled = errors.New("a beat frame was not answered in time")

// rawRecorder counts every answer and, while recording, keeps one sample
// per answered frame.
type rawRecorder struct {
	acked, rejected, retried atomic.Int64
	lastAck                  atomic.Int64 // unix ns

	// markNs and firstAckNs: the first answer to a frame sent at or after
	// the mark (a leader kill).
	markNs, firstAckNs atomic.Int64

	recording atomic.Bool
	mu        sync.Mutex
	samples   []weighted
	slow      []slowFrame // frames answered after slowFrameAfter, while recording
}

// slowFrameAfter: a frame answered later than this is listed by when it
// was sent, to find what the slow ones have in common.
const slowFrameAfter = 100 * time.Millisecond

type slowFrame struct {
	sent time.Time
	lat  time.Duration
}

func (r *rawRecorder) onAck(f *rawFrame, sentAt time.Time, rejected int) {
	now := time.Now()
	ok := int(f.n) - rejected
	r.acked.Add(int64(ok))
	r.rejected.Add(int64(rejected))
	r.lastAck.Store(now.UnixNano())
	if m := r.markNs.Load(); m != 0 && sentAt.UnixNano() >= m {
		r.firstAckNs.CompareAndSwap(0, now.UnixNano())
	}
	if r.recording.Load() {
		lat := now.Sub(sentAt)
		r.mu.Lock()
		r.samples = append(r.samples, weighted{lat, ok})
		if lat > slowFrameAfter {
			r.slow = append(r.slow, slowFrame{sentAt, lat})
		}
		r.mu.Unlock()
	}
}

// record starts a recording, dropping the last one's samples.
func (r *rawRecorder) record() {
	r.mu.Lock()
	r.samples, r.slow = r.samples[:0], r.slow[:0]
	r.mu.Unlock()
	r.recording.Store(true)
}

// stop ends the recording and returns its samples.
func (r *rawRecorder) stop() []weighted {
	r.recording.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]weighted, len(r.samples))
	copy(out, r.samples)
	return out
}

// slowBySecond describes the slow frames of the last recording by the
// second they were sent in, counted from start: "+12s 40 (max 212ms)".
func (r *rawRecorder) slowBySecond(start time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type sec struct {
		n   int
		max time.Duration
	}
	by := map[int]*sec{}
	for _, f := range r.slow {
		k := int(f.sent.Sub(start) / time.Second)
		if by[k] == nil {
			by[k] = &sec{}
		}
		by[k].n++
		by[k].max = max(by[k].max, f.lat)
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(by)) {
		out = append(out, fmt.Sprintf("+%ds %d (max %v)", k, by[k].n, by[k].max.Round(time.Millisecond)))
	}
	return out
}

// mark sets the moment from which firstAckAfterMark counts.
func (r *rawRecorder) mark(t time.Time) {
	r.firstAckNs.Store(0)
	r.markNs.Store(t.UnixNano())
}

// firstAckAfterMark is when the first frame sent at or after the mark was
// answered (zero: none yet).
func (r *rawRecorder) firstAckAfterMark() time.Time {
	if ns := r.firstAckNs.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// newRawGen cuts n instances into frames of perFrame beats (instance i is
// ref(i)) over streams streams.
func newRawGen(endpoints []string, conn func(string) (*grpc.ClientConn, error), n, perFrame, streams int,
	interval time.Duration, ref func(i int) *registryv1.InstanceRef) *rawGen {
	g := &rawGen{endpoints: endpoints, conn: conn, interval: interval}
	for lo := 0; lo < n; lo += perFrame {
		hi := min(lo+perFrame, n)
		refs := make([]*registryv1.InstanceRef, 0, hi-lo)
		for i := lo; i < hi; i++ {
			refs = append(refs, ref(i))
		}
		g.frames = append(g.frames, &rawFrame{req: &registryv1.BeatRequest{Beats: refs}, n: int32(hi - lo)})
	}
	streams = max(1, min(streams, len(g.frames)))
	for i := range streams {
		s := &rawStream{g: g, idx: i, inflight: map[uint64]sent{}}
		for j := i; j < len(g.frames); j += streams {
			s.frames = append(s.frames, g.frames[j])
		}
		g.streams = append(g.streams, s)
	}
	return g
}

// registered notes that instance i (of perFrame-sized frames) is
// registered.
func (g *rawGen) registered(i, perFrame int) { g.frames[i/perFrame].registered.Add(1) }

// allAcked reports whether every frame was answered once since it
// became active.
func (g *rawGen) allAcked() bool {
	for _, f := range g.frames {
		if !f.acked.Load() {
			return false
		}
	}
	return true
}

// breaks is how many times a stream broke and was reopened.
func (g *rawGen) breaks() int64 {
	var n int64
	for _, s := range g.streams {
		n += s.breaks.Load()
	}
	return n
}

// start runs the streams until stop.
func (g *rawGen) start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	for _, s := range g.streams {
		g.wg.Go(func() { s.run(ctx) })
	}
}

// stop ends the streams and waits for them.
func (g *rawGen) stop() {
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
}

// run keeps the stream's frames beating, reopening the stream on the
// next endpoint when it breaks.
func (s *rawStream) run(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr := s.g.endpoints[(s.idx+attempt)%len(s.g.endpoints)]
		err := s.stream(ctx, addr)
		if ctx.Err() != nil || err == nil {
			return
		}
		s.breaks.Add(1)
		st := status.Convert(err)
		s.g.note(fmt.Sprintf("stream break: %v: %.80s", st.Code(), st.Message()), 1)
		sleepCtx(ctx, min(time.Duration(attempt%8+1)*50*time.Millisecond, time.Second))
	}
}

// stream beats on one stream until it breaks or ctx ends (nil).
func (s *rawStream) stream(ctx context.Context, addr string) error {
	cc, err := s.g.conn(addr)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := registryv1.NewRegistryClient(cc).BeatStream(sctx)
	if err != nil {
		return err
	}
	// What was in flight on the last stream may be lost: send it again.
	s.mu.Lock()
	for _, x := range s.inflight {
		s.resend = append(s.resend, x.f)
	}
	clear(s.inflight)
	s.mu.Unlock()

	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.handle(resp)
		}
	})

	period := max(time.Millisecond, s.g.interval/time.Duration(max(1, len(s.frames))))
	tick := time.NewTicker(period)
	defer tick.Stop()
	next := 0
	for {
		now := time.Now()
		s.mu.Lock()
		due := s.resend
		s.resend = nil
		stalled := false
		for _, x := range s.inflight {
			if now.Sub(x.at) > rawStallAfter {
				stalled = true
			}
		}
		s.mu.Unlock()
		if stalled {
			return errRawStalled
		}
		if len(s.frames) > 0 {
			f := s.frames[next]
			next = (next + 1) % len(s.frames)
			if f.active() {
				due = append(due, f)
			}
		}
		for _, f := range due {
			if err := s.send(st, f, now); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return err
		case <-tick.C:
		}
	}
}

// send sends f with the next sequence number.
func (s *rawStream) send(st grpc.BidiStreamingClient[registryv1.BeatRequest, registryv1.BeatResponse], f *rawFrame, now time.Time) error {
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.inflight[seq] = sent{f, now}
	s.mu.Unlock()
	// Only this goroutine sends f, and Send has encoded it when it
	// returns: the request is reused.
	f.req.Seq = seq
	return st.Send(f.req)
}

// handle takes one answer.
func (s *rawStream) handle(resp *registryv1.BeatResponse) {
	s.mu.Lock()
	x, ok := s.inflight[resp.Seq]
	delete(s.inflight, resp.Seq)
	if ok && resp.Retry != nil {
		// Resent by the ticker's next round after retryAfter at the
		// earliest: queue it once that much time has passed.
		s.mu.Unlock()
		s.g.rec.retried.Add(int64(x.f.n))
		f := x.f
		time.AfterFunc(retryAfter, func() {
			s.mu.Lock()
			s.resend = append(s.resend, f)
			s.mu.Unlock()
		})
		return
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	x.f.acked.Store(true)
	for _, rj := range resp.Rejected {
		s.g.note("beat rejected: "+rj.Reason.String(), 1)
	}
	s.g.rec.onAck(x.f, x.at, len(resp.Rejected))
}
