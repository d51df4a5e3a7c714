package harness

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// InstanceKey names an instance: its service and id.
type InstanceKey struct {
	Service, ID string
}

func (k InstanceKey) String() string { return k.Service + "/" + k.ID }

// KeyOf returns the key of in.
func KeyOf(in *registryv1.Instance) InstanceKey {
	return InstanceKey{Service: in.GetService(), ID: in.GetId()}
}

// BeaterOptions configure a Beater. The zero value is usable.
type BeaterOptions struct {
	// Lanes is the number of beat loops, each with its own gRPC connection
	// to each node; lane i starts on node i mod len(nodes). Default
	// len(nodes).
	Lanes int
	// Tick is how often a lane sends the beats that are due, in one call.
	// Default 100 ms.
	Tick time.Duration
	// RetryDelay is the pause after a failed call before the lane sends the
	// same beats to the next node. Default 50 ms.
	RetryDelay time.Duration
	// CallTimeout bounds one Beat call, so that a paused node costs at most
	// this much before the lane fails over. Default 1 s.
	CallTimeout time.Duration
	// Logf, if set, gets one line per failed call (at most MaxLogged of
	// them) and per failover. It is not called after Stop returns.
	Logf func(format string, args ...any)
	// MaxLogged bounds the lines given to Logf. Default 20.
	MaxLogged int
}

func (o BeaterOptions) withDefaults(nodes int) BeaterOptions {
	if o.Lanes <= 0 {
		o.Lanes = nodes
	}
	if o.Tick <= 0 {
		o.Tick = 100 * time.Millisecond
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 50 * time.Millisecond
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = time.Second
	}
	if o.MaxLogged <= 0 {
		o.MaxLogged = 20
	}
	return o
}

// maxBeatBatch is the most beats one Beat call may carry (validate).
const maxBeatBatch = 10_000

// BeatRecord is what a Beater knows about one instance. Times are local,
// with their monotonic reading.
type BeatRecord struct {
	// LastAck is when the last acknowledged beat's response was received
	// (for an instance not beaten yet: when it was added, the registration
	// counting as a beat).
	LastAck time.Time
	// LastSent is when the last call that carried the instance was sent,
	// whatever its outcome. A call that failed at the client may still
	// have been committed, so the registry's last beat is no later than
	// max(LastAck, LastSent).
	LastSent time.Time
	// LastAckSent is when the call that LastAck acknowledges was sent (for
	// an instance not beaten yet: LastAck). The registry stamps a beat no
	// earlier than its sending, so a correct registry expires the instance
	// no sooner than LastAckSent plus its TTL, by this process's clock.
	LastAckSent time.Time
	// Acks counts the acknowledged (not rejected) beats.
	Acks int
	// Rejections counts the beats rejected as UNKNOWN or FENCED.
	Rejections int
	// LastRejection is the reason of the last rejection.
	LastRejection registryv1.BeatRejectReason
	// MaxGap is the longest time between two acknowledgements (the first
	// one measured from when the instance was added).
	MaxGap time.Duration
	// Halted: the Beater does not beat the instance (see Halt).
	Halted bool
}

// BeatStats are a Beater's totals.
type BeatStats struct {
	Calls, FailedCalls, Failovers int
	// Acked counts acknowledged beats, Unknown and Fenced rejected ones.
	Acked, Unknown, Fenced int
	// MaxCall is the longest successful call.
	MaxCall time.Duration
}

// Beater keeps instances alive the way a client library does: every
// instance is beaten once per its own beat interval, the beats that are due
// sent in one Beat call per lane per tick; a failed call is retried after
// RetryDelay on the next node. It is safe for concurrent use.
type Beater struct {
	opts  BeaterOptions
	nodes []*Node
	lanes []*lane
	wg    sync.WaitGroup

	mu        sync.Mutex
	cancel    context.CancelFunc // set by start
	instances map[InstanceKey]*beatState
	next      int // the lane of the next added instance
	stats     BeatStats
	logged    int
	stopped   bool
}

type beatState struct {
	ref      *registryv1.InstanceRef
	interval time.Duration
	nextDue  time.Time
	rec      BeatRecord
}

// lane is one beat loop with one connection to each node.
type lane struct {
	id      int
	clients []registryv1.RegistryClient // one per node, aligned with Beater.nodes
	conns   []*grpc.ClientConn
	keys    []InstanceKey // guarded by Beater.mu
}

// NewBeater starts a Beater over nodes, with no instance yet (see Add). A
// t.Cleanup stops it; so may Stop, earlier. It must be called from the test
// goroutine.
func NewBeater(t testing.TB, nodes []*Node, opts BeaterOptions) *Beater {
	t.Helper()
	if len(nodes) == 0 {
		t.Fatal("harness: NewBeater needs at least one node")
	}
	b := newBeater(nodes, opts)
	t.Cleanup(b.Stop)
	for _, l := range b.lanes {
		for _, n := range b.nodes {
			conn, err := n.Dial()
			if err != nil {
				b.Stop()
				t.Fatalf("harness: beater: %v", err)
			}
			l.conns = append(l.conns, conn)
			l.clients = append(l.clients, registryv1.NewRegistryClient(conn))
		}
	}
	b.start()
	return b
}

// newBeater returns a Beater with its lanes but no clients; start starts
// them once every lane has a client per node.
func newBeater(nodes []*Node, opts BeaterOptions) *Beater {
	opts = opts.withDefaults(len(nodes))
	b := &Beater{
		opts:      opts,
		nodes:     slices.Clone(nodes),
		instances: make(map[InstanceKey]*beatState),
	}
	for i := range opts.Lanes {
		b.lanes = append(b.lanes, &lane{id: i})
	}
	return b
}

func (b *Beater) start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.mu.Lock()
	b.cancel = cancel
	b.mu.Unlock()
	for _, l := range b.lanes {
		b.wg.Go(func() { b.run(ctx, l) })
	}
}

// Add starts beating instances, registered and acknowledged just now: the
// registration counts as their last beat, so each is first due one beat
// interval from now. Instances are dealt to the lanes in turn.
func (b *Beater) Add(instances ...*registryv1.Instance) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, in := range instances {
		key := KeyOf(in)
		if _, ok := b.instances[key]; ok {
			continue
		}
		interval := in.GetBeatInterval().AsDuration()
		b.instances[key] = &beatState{
			ref:      &registryv1.InstanceRef{Service: in.GetService(), Id: in.GetId(), Incarnation: in.GetIncarnation()},
			interval: interval,
			nextDue:  now.Add(interval),
			rec:      BeatRecord{LastAck: now, LastAckSent: now},
		}
		l := b.lanes[b.next%len(b.lanes)]
		b.next++
		l.keys = append(l.keys, key)
	}
}

// Halt stops beating the given instances, as if they had died. A call that
// carries them and is in flight still counts when it is acknowledged.
func (b *Beater) Halt(keys ...InstanceKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		if s, ok := b.instances[k]; ok {
			s.rec.Halted = true
		}
	}
}

// Resume beats halted instances again, starting at the next tick.
func (b *Beater) Resume(keys ...InstanceKey) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		if s, ok := b.instances[k]; ok && s.rec.Halted {
			s.rec.Halted = false
			s.nextDue = now
		}
	}
}

// Record returns what the Beater knows about the instance named by key.
func (b *Beater) Record(key InstanceKey) (BeatRecord, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.instances[key]
	if !ok {
		return BeatRecord{}, false
	}
	return s.rec, true
}

// Records returns the record of every instance.
func (b *Beater) Records() map[InstanceKey]BeatRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[InstanceKey]BeatRecord, len(b.instances))
	for k, s := range b.instances {
		out[k] = s.rec
	}
	return out
}

// Stats returns the Beater's totals.
func (b *Beater) Stats() BeatStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// AckedSince is a condition for Poll: every instance that is not halted has
// had a beat acknowledged after since.
func (b *Beater) AckedSince(since time.Time) func(context.Context) error {
	return func(context.Context) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		behind := 0
		var example InstanceKey
		for k, s := range b.instances {
			if !s.rec.Halted && !s.rec.LastAck.After(since) {
				if behind == 0 {
					example = k
				}
				behind++
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d instances (e.g. %s) have no beat acknowledged since %s (%d calls failed so far)",
				behind, example, since.Format("15:04:05.000"), b.stats.FailedCalls)
		}
		return nil
	}
}

// Stop stops every lane, waits for them and closes their connections. It
// is idempotent.
func (b *Beater) Stop() {
	b.mu.Lock()
	cancel := b.cancel
	b.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	b.wg.Wait()
	b.mu.Lock()
	stopped := b.stopped
	b.stopped = true
	b.mu.Unlock()
	if stopped {
		return
	}
	for _, l := range b.lanes {
		for _, conn := range l.conns {
			conn.Close()
		}
	}
}

func (b *Beater) logf(format string, args ...any) {
	if b.opts.Logf == nil {
		return
	}
	b.mu.Lock()
	ok := b.logged < b.opts.MaxLogged
	b.logged++
	b.mu.Unlock()
	if ok {
		b.opts.Logf(format, args...)
	}
}

// run is one lane: every tick it sends the beats that are due to its
// current node, and on failure to the next one after RetryDelay, until
// they are acknowledged or the Beater stops.
func (b *Beater) run(ctx context.Context, l *lane) {
	cur := l.id % len(b.nodes)
	ticker := time.NewTicker(b.opts.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for {
			refs := b.due(l, time.Now())
			if len(refs) == 0 {
				break
			}
			err := b.send(ctx, l, cur, refs)
			if err == nil {
				continue // more may be due beyond one call's limit
			}
			if ctx.Err() != nil {
				return
			}
			next := (cur + 1) % len(b.nodes)
			b.mu.Lock()
			b.stats.Failovers++
			b.mu.Unlock()
			b.logf("beater lane %d: %d beats through %s failed: %v; retrying on %s",
				l.id, len(refs), b.nodes[cur], err, b.nodes[next])
			cur = next
			timer := time.NewTimer(b.opts.RetryDelay)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
	}
}

// due returns the refs of the lane's instances that are due at now and not
// halted, at most one call's worth.
func (b *Beater) due(l *lane, now time.Time) []*registryv1.InstanceRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	var refs []*registryv1.InstanceRef
	for _, k := range l.keys {
		s := b.instances[k]
		if s.rec.Halted || now.Before(s.nextDue) {
			continue
		}
		refs = append(refs, s.ref)
		if len(refs) == maxBeatBatch {
			break
		}
	}
	return refs
}

// send sends one Beat call through node cur and records its outcome.
func (b *Beater) send(ctx context.Context, l *lane, cur int, refs []*registryv1.InstanceRef) error {
	sent := time.Now()
	b.mu.Lock()
	b.stats.Calls++
	for _, r := range refs {
		b.instances[InstanceKey{r.Service, r.Id}].rec.LastSent = sent
	}
	b.mu.Unlock()

	callCtx, cancel := context.WithTimeout(ctx, b.opts.CallTimeout)
	resp, err := l.clients[cur].Beat(callCtx, &registryv1.BeatRequest{Beats: refs})
	cancel()
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			b.stats.FailedCalls++
		}
		return fmt.Errorf("after %v: %w", now.Sub(sent).Round(time.Millisecond), err)
	}
	b.stats.MaxCall = max(b.stats.MaxCall, now.Sub(sent))
	rejected := make(map[InstanceKey]registryv1.BeatRejectReason, len(resp.GetRejected()))
	for _, rj := range resp.GetRejected() {
		rejected[InstanceKey{rj.GetInstance().GetService(), rj.GetInstance().GetId()}] = rj.GetReason()
	}
	for _, r := range refs {
		k := InstanceKey{r.Service, r.Id}
		s := b.instances[k]
		s.nextDue = sent.Add(s.interval)
		if reason, ok := rejected[k]; ok {
			s.rec.Rejections++
			s.rec.LastRejection = reason
			if reason == registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED {
				b.stats.Fenced++
			} else {
				b.stats.Unknown++
			}
			continue
		}
		s.rec.MaxGap = max(s.rec.MaxGap, now.Sub(s.rec.LastAck))
		s.rec.LastAck = now
		s.rec.LastAckSent = sent
		s.rec.Acks++
		b.stats.Acked++
	}
	return nil
}
