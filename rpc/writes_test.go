package rpc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/internal/poll"
)

// recordingReplica applies proposals to a real FSM and records the type
// and size of each entry. While gate is non-nil, Apply waits on it first.
type recordingReplica struct {
	*fsmtest.Replica
	gate chan struct{}

	mu      sync.Mutex
	entries []recordedEntry
	started chan struct{} // gets a value when an Apply starts
}

type recordedEntry struct {
	typ    fsm.MessageType
	writes int // the writes of a WriteBatch, 1 otherwise
}

func newRecordingReplica(t *testing.T) *recordingReplica {
	return &recordingReplica{Replica: fsmtest.NewReplica(t), started: make(chan struct{}, 100)}
}

func (r *recordingReplica) Apply(ctx context.Context, e fsm.Entry) (any, error) {
	r.started <- struct{}{}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rec := recordedEntry{typ: e.Type(), writes: 1}
	if e.Type() == fsm.WriteBatchType {
		_, msg, err := fsm.Decode(e.Data())
		if err != nil {
			return nil, err
		}
		rec.writes = len(msg.(*fsmpb.WriteBatch).Writes)
	}
	r.mu.Lock()
	r.entries = append(r.entries, rec)
	r.mu.Unlock()
	return r.Replica.Apply(ctx, e)
}

func (r *recordingReplica) recorded() []recordedEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedEntry(nil), r.entries...)
}

// countingLeader is a leader that counts IsLeader calls: Register and
// Deregister ask it last before they submit to the group commit.
type countingLeader struct {
	*fakeCluster
	asked atomic.Int64
}

func (c *countingLeader) IsLeader() bool {
	c.asked.Add(1)
	return true
}

// newWriteServer serves writes with one flush in flight: whatever arrives
// while it commits waits for the next one (groupcommit's tests cover
// several in flight).
func newWriteServer(t *testing.T, ap fsm.Proposer, cl Cluster) registryv1.RegistryClient {
	t.Helper()
	_, cc := newTestConn(t, Config{NodeID: "n1", Applier: ap, Cluster: cl, State: &fakeState{},
		Writes: groupcommit.Config{Window: time.Millisecond, MaxInflight: 1},
		Clock:  func() time.Time { return time.Unix(0, 1000) }})
	return registryv1.NewRegistryClient(cc)
}

func regRequest(svc, id string, inc uint64) *registryv1.RegisterRequest {
	return &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: svc, Id: id, Address: "127.0.0.1:80", Incarnation: inc}}
}

func regCmd(svc, id string, inc uint64) *fsmpb.Register {
	return &fsmpb.Register{Service: svc, Id: id, Address: "127.0.0.1:80", Incarnation: inc, BeatIntervalNs: int64(time.Second)}
}

// Concurrent writes that arrive while an entry commits share the next
// entry, and each caller gets its own answer: the fenced registration
// fails with FailedPrecondition, the absent deregistration with NotFound,
// their neighbours succeed.
func TestConcurrentWritesShareAnEntryAndEachGetsItsOwnResult(t *testing.T) {
	ap := newRecordingReplica(t)
	ap.ApplyMsg(t, regCmd("orders", "fenced", 5)) // index 1
	ap.gate = make(chan struct{})
	cl := &countingLeader{fakeCluster: &fakeCluster{leader: true}}
	client := newWriteServer(t, ap, cl)
	ctx := t.Context()

	// A lone write is proposed at once, as the Register command it was.
	first := make(chan error, 1)
	go func() {
		_, err := client.Register(ctx, regRequest("orders", "first", 1))
		first <- err
	}()
	select {
	case <-ap.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the lone registration was not proposed")
	}

	// While it commits, four more writes arrive.
	wait := sendMixedWrites(ctx, client)
	// Each handler asks IsLeader last, just before it submits, and so did
	// the first flush: five handlers and one flush.
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		if n := cl.asked.Load(); n < 6 {
			return errors.New("not every write has reached the group commit")
		}
		return nil
	})
	close(ap.gate)
	answers := wait()
	if err := <-first; err != nil {
		t.Fatalf("first Register: %v", err)
	}

	entries := ap.recorded()
	if len(entries) < 2 || entries[0] != (recordedEntry{typ: fsm.RegisterType, writes: 1}) {
		t.Fatalf("entries %+v: want the lone Register first", entries)
	}
	batched := 0
	for _, e := range entries[1:] {
		if e.typ == fsm.WriteBatchType {
			batched = max(batched, e.writes)
		}
	}
	if batched < 2 || len(entries) >= 5 {
		t.Errorf("entries %+v: want the four concurrent writes to share entries", entries)
	}

	for _, name := range []string{"good", "good2"} {
		a := answers[name]
		if a.err != nil {
			t.Errorf("%s: %v, want success beside the fenced one", name, a.err)
			continue
		}
		if a.reg.Index < 3 || a.reg.Instance.GetId() != name || a.reg.Instance.GetIncarnation() != 1 {
			t.Errorf("%s: answer %v, want its own instance at index >= 3", name, a.reg)
		}
	}
	if code := status.Code(answers["fenced"].err); code != codes.FailedPrecondition {
		t.Errorf("fenced: %v, want FailedPrecondition", answers["fenced"].err)
	}
	if code := status.Code(answers["absent"].err); code != codes.NotFound {
		t.Errorf("absent: %v, want NotFound", answers["absent"].err)
	}
	if in, ok := ap.FSM.Instance("orders", "fenced"); !ok || in.Incarnation != 5 {
		t.Errorf("the fenced instance is %+v, %v; want incarnation 5 kept", in, ok)
	}
}

// The flush hands each write the outcome of its own position in the
// batch, which the FSM applies in order: a register then a deregister of
// the same id leave it absent.
func TestFlushWritesAnswersEachWriteInOrder(t *testing.T) {
	ap := newRecordingReplica(t)
	ap.ApplyMsg(t, regCmd("orders", "fenced", 5)) // index 1
	s, _ := newTestConn(t, Config{NodeID: "n1", Applier: ap, Cluster: &fakeCluster{leader: true}, State: &fakeState{},
		Clock: func() time.Time { return time.Unix(0, 4242) }})

	items := []writeItem{
		{reg: regCmd("orders", "a", 1)},
		{reg: regCmd("orders", "fenced", 1)},
		{reg: regCmd("orders", "same", 1)},
		{dereg: &fsmpb.Deregister{Service: "orders", Id: "same", Incarnation: 1}},
		{dereg: &fsmpb.Deregister{Service: "orders", Id: "same"}}, // gone by now
		{reg: regCmd("orders", "b", 1)},
	}
	out, err := s.flushWrites(t.Context(), items)
	if err != nil {
		t.Fatal(err)
	}
	if got := ap.recorded(); len(got) != 1 || got[0] != (recordedEntry{typ: fsm.WriteBatchType, writes: len(items)}) {
		t.Fatalf("entries %+v, want one WriteBatch of %d writes", got, len(items))
	}
	if len(out) != len(items) {
		t.Fatalf("%d outcomes for %d writes", len(out), len(items))
	}
	for i, id := range map[int]string{0: "a", 2: "same", 5: "b"} {
		if o := out[i]; o.err != nil || o.reg == nil || o.reg.Instance.GetId() != id || o.reg.Index != 2 ||
			o.reg.Instance.GetRegisteredAt().AsTime().UnixNano() != 4242 || len(o.reg.BeatKey) == 0 {
			t.Errorf("write %d: %+v, want %s registered at index 2 at the flush's time, with its beat key", i, o, id)
		}
	}
	if o := out[1]; !errors.Is(o.err, fsm.ErrFenced) || o.reg != nil {
		t.Errorf("write 1: %+v, want fenced", o)
	}
	if o := out[3]; o.err != nil || o.dereg == nil || o.dereg.Index != 2 {
		t.Errorf("write 3: %+v, want same deregistered", o)
	}
	if o := out[4]; !errors.Is(o.err, fsm.ErrNotFound) {
		t.Errorf("write 4: %+v, want not found", o)
	}
	if _, ok := ap.FSM.Instance("orders", "same"); ok {
		t.Error("orders/same is registered, want it deregistered by the later write")
	}

	// A lone write is proposed as its own command.
	out, err = s.flushWrites(t.Context(), []writeItem{{reg: regCmd("orders", "fenced", 2)}})
	if err != nil || !errors.Is(out[0].err, fsm.ErrFenced) {
		t.Errorf("lone fenced write: %+v, %v; want its own ErrFenced", out, err)
	}
	if got := ap.recorded(); len(got) != 2 || got[1].typ != fsm.RegisterType {
		t.Errorf("entries %+v, want a Register after the WriteBatch", got)
	}
}

// A proposal that fails as a whole (leadership lost) fails each write of
// the batch with that error, as it would have failed each alone.
func TestAFailedProposalFailsEveryWriteOfTheBatch(t *testing.T) {
	ap := &fakeApplier{} // every proposal fails
	s, _ := newTestConn(t, Config{NodeID: "n1", Applier: ap, Cluster: &fakeCluster{leader: true}, State: &fakeState{}})
	_, err := s.flushWrites(t.Context(), []writeItem{{reg: regCmd("orders", "a", 1)}, {reg: regCmd("orders", "b", 1)}})
	if err == nil {
		t.Fatal("flushWrites succeeded, want the proposal's error")
	}
	if len(ap.calls) != 1 || ap.calls[0] != fsm.WriteBatchType {
		t.Errorf("proposals %v, want one WriteBatch", ap.calls)
	}
}

// writeAnswer is what one of sendMixedWrites' calls got.
type writeAnswer struct {
	reg   *registryv1.RegisterResponse
	dereg *registryv1.DeregisterResponse
	err   error
}

// sendMixedWrites sends, each on its own goroutine, four writes that a
// group commit must answer each on its own: two good registrations
// ("good", "good2"), one fenced by a stored higher incarnation ("fenced")
// and a deregistration of an absent instance ("absent"). wait returns
// their answers by name once all four are back.
func sendMixedWrites(ctx context.Context, client registryv1.RegistryClient) (wait func() map[string]writeAnswer) {
	calls := map[string]func() writeAnswer{
		"good": func() writeAnswer {
			r, err := client.Register(ctx, regRequest("orders", "good", 1))
			return writeAnswer{reg: r, err: err}
		},
		"fenced": func() writeAnswer {
			r, err := client.Register(ctx, regRequest("orders", "fenced", 4))
			return writeAnswer{reg: r, err: err}
		},
		"absent": func() writeAnswer {
			r, err := client.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "absent"})
			return writeAnswer{dereg: r, err: err}
		},
		"good2": func() writeAnswer {
			r, err := client.Register(ctx, regRequest("web", "good2", 1))
			return writeAnswer{reg: r, err: err}
		},
	}
	answers := make(map[string]writeAnswer)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Go(func() {
			a := call()
			mu.Lock()
			answers[name] = a
			mu.Unlock()
		})
	}
	return func() map[string]writeAnswer {
		wg.Wait()
		return answers
	}
}
