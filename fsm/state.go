package fsm

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
	"unique"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// State is the registry's data: instances indexed by service then id, and
// node metadata by node id. Its mutation methods are pure functions of the
// state and the command (the Raft index and the command's timestamp are the
// only clock); they return the response and the events of the change. State
// does no locking: FSM serializes access.
//
// The instances live densely in a chunked store, in no meaningful order
// (a removal moves the last one into the hole), indexed by service then
// id: the expiry checker's scan, ten times a second on the leader, reads
// contiguous memory without copying and skips the chunks in which no
// instance is due (see FSM.ScanDue), and a beat updates
// its instance in place after one lookup. A snapshot shares the store's
// chunks copy-on-write (see store), so taking it costs O(chunks), not
// O(instances). Nothing may depend on the store's order, which a restored
// replica does not share.
type State struct {
	services map[string]map[string]int // service → id → position in insts
	// suspects counts each service's SUSPECT instances (absent: none), so
	// that Services, read at every metrics scrape and by the console every
	// second, is O(services) and not a walk of every instance under the
	// read lock.
	suspects map[string]int
	insts    store
	nodes    map[string]NodeMeta
	acl      aclState
	// beatSecret is the cluster beat secret (BeatSecretSet), nil until set.
	// It never changes once set and is never handed out by a read API.
	beatSecret []byte
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		services: make(map[string]map[string]int),
		suspects: make(map[string]int),
		nodes:    make(map[string]NodeMeta),
		acl:      newACLState(),
	}
}

func (s *State) put(in Instance) {
	ids := s.services[in.Service]
	if ids == nil {
		ids = make(map[string]int)
		s.services[in.Service] = ids
	}
	if pos, ok := ids[in.ID]; ok {
		s.countSuspect(in.Service, s.insts.at(pos).State, -1)
		s.insts.set(pos, in)
		s.countSuspect(in.Service, in.State, 1)
		return
	}
	ids[in.ID] = s.insts.push(in)
	s.countSuspect(in.Service, in.State, 1)
}

// countSuspect adds d to service's SUSPECT count if st is SUSPECT.
func (s *State) countSuspect(service string, st InstanceState, d int) {
	if st != StateSuspect {
		return
	}
	if n := s.suspects[service] + d; n != 0 {
		s.suspects[service] = n
	} else {
		delete(s.suspects, service)
	}
}

// lookup returns the position of an instance in insts.
func (s *State) lookup(service, id string) (int, bool) {
	pos, ok := s.services[service][id]
	return pos, ok
}

func (s *State) remove(service, id string) {
	ids := s.services[service]
	pos, ok := ids[id]
	if !ok {
		return
	}
	s.countSuspect(service, s.insts.at(pos).State, -1)
	delete(ids, id)
	if len(ids) == 0 {
		delete(s.services, service)
	}
	if last := s.insts.len() - 1; pos != last {
		moved := *s.insts.at(last)
		s.insts.set(pos, moved)
		s.services[moved.Service][moved.ID] = pos
	}
	s.insts.pop() // drops its strings and metadata for the GC
}

// scan calls fn for every instance in no meaningful order: callers must
// not let the order decide anything that reaches the state. fn gets a
// pointer into the state itself: it must not keep it or write through it.
func (s *State) scan(fn func(*Instance)) {
	s.insts.each(fn)
}

// scanChunks calls fn for every instance in chunks [from, to) of the
// store, in store order, and reports whether chunks remain after to.
func (s *State) scanChunks(from, to int, fn func(*Instance)) bool {
	return s.insts.eachIn(from, to, fn)
}

// scanDueChunks is scanChunks skipping the chunks in which no instance is
// due at now (see store.eachDue).
func (s *State) scanDueChunks(now int64, from, to int, fn func(*Instance)) bool {
	return s.insts.eachDue(now, from, to, fn)
}

// Len returns the number of instances.
func (s *State) Len() int { return s.insts.len() }

// Register upserts an instance keyed by (service, id); see the package
// documentation for the incarnation rules. It fails with ErrFenced when the
// command's incarnation is lower than the stored one.
func (s *State) Register(index uint64, c *fsmpb.Register) (RegisterResult, []Event, error) {
	now := c.GetNowUnixNs()
	next := Instance{
		Service:       intern(c.GetService()),
		ID:            c.GetId(),
		Address:       c.GetAddress(),
		Metadata:      cloneMetadata(c.GetMetadata()),
		Incarnation:   c.GetIncarnation(),
		BeatInterval:  time.Duration(c.GetBeatIntervalNs()),
		SuspectAfter:  time.Duration(c.GetSuspectAfterNs()),
		TTL:           time.Duration(c.GetTtlNs()),
		State:         StateHealthy,
		CreateIndex:   index,
		ModifyIndex:   index,
		LastBeatIndex: index,
		RegisteredAt:  now,
		LastBeatAt:    now,
	}
	old, ok := s.Get(next.Service, next.ID)
	switch {
	case !ok:
		s.put(next)
		return RegisterResult{Index: index, Instance: next, Created: true},
			[]Event{{Type: EventRegistered, Index: index, Instance: next, At: now}}, nil
	case next.Incarnation < old.Incarnation:
		return RegisterResult{}, nil, fmt.Errorf("%w: %s/%s is at incarnation %d, got %d",
			ErrFenced, next.Service, next.ID, old.Incarnation, next.Incarnation)
	case next.Incarnation > old.Incarnation:
		// A new incarnation supersedes the old one: a fresh registration.
		s.put(next)
		return RegisterResult{Index: index, Instance: next},
			[]Event{{Type: EventUpdated, Index: index, Instance: next, At: now}}, nil
	}

	// Same incarnation: an idempotent upsert that also counts as a beat.
	next.CreateIndex = old.CreateIndex
	next.RegisteredAt = old.RegisteredAt
	next.ModifyIndex = old.ModifyIndex
	// The same incarnation has the same UDP beat key: its replay floor stays.
	next.LastUDPSeq = old.LastUDPSeq
	var events []Event
	switch {
	case !sameSpec(old, next):
		next.ModifyIndex = index
		events = []Event{{Type: EventUpdated, Index: index, Instance: next, At: now}}
	case old.State == StateSuspect:
		next.ModifyIndex = index
		events = []Event{reacquired(index, now, old, next)}
	}
	s.put(next)
	return RegisterResult{Index: index, Instance: next}, events, nil
}

// sameSpec reports whether the registration fields of a and b are equal.
func sameSpec(a, b Instance) bool {
	return a.Address == b.Address &&
		a.BeatInterval == b.BeatInterval &&
		a.SuspectAfter == b.SuspectAfter &&
		a.TTL == b.TTL &&
		maps.Equal(a.Metadata, b.Metadata)
}

// Deregister removes an instance. It fails with ErrNotFound when the instance
// is absent and with ErrFenced when the command names an incarnation (non-zero)
// other than the stored one.
func (s *State) Deregister(index uint64, c *fsmpb.Deregister) (DeregisterResult, []Event, error) {
	old, ok := s.Get(c.GetService(), c.GetId())
	if !ok {
		return DeregisterResult{}, nil, fmt.Errorf("%w: %s/%s", ErrNotFound, c.GetService(), c.GetId())
	}
	if inc := c.GetIncarnation(); inc != 0 && inc != old.Incarnation {
		return DeregisterResult{}, nil, fmt.Errorf("%w: %s/%s is at incarnation %d, got %d",
			ErrFenced, old.Service, old.ID, old.Incarnation, inc)
	}
	s.remove(old.Service, old.ID)
	return DeregisterResult{Index: index, Instance: old},
		[]Event{{Type: EventDeregistered, Index: index, Instance: old, At: c.GetNowUnixNs()}}, nil
}

// WriteBatch applies the registrations and deregistrations of a batch in
// order, all at index, each exactly as Register or Deregister would alone:
// a write that fails (fenced, not found, empty) fails alone, its result
// holding the error, and the batch never fails. Later writes see the
// effects of earlier ones.
func (s *State) WriteBatch(index uint64, c *fsmpb.WriteBatch) (WriteBatchResult, []Event) {
	writes := c.GetWrites()
	res := WriteBatchResult{Index: index, Results: make([]WriteResult, len(writes))}
	var events []Event
	for i, w := range writes {
		out := &res.Results[i]
		switch op := w.GetOp().(type) {
		case *fsmpb.Write_Register:
			r, ev, err := s.Register(index, op.Register)
			if err != nil {
				out.Err = err
				continue
			}
			out.Register = &r
			events = append(events, ev...)
		case *fsmpb.Write_Deregister:
			r, ev, err := s.Deregister(index, op.Deregister)
			if err != nil {
				out.Err = err
				continue
			}
			out.Deregister = &r
			events = append(events, ev...)
		default:
			out.Err = fmt.Errorf("%w: write %d of the batch at index %d", ErrEmptyWrite, i, index)
		}
	}
	return res, events
}

// BeatBatch renews the instances named by the batch, in order. A beat for an
// absent instance or another incarnation is rejected; the batch never fails.
// A beat on a SUSPECT instance makes it HEALTHY again (EventReacquired).
// A UDP beat (udp_seq non-zero) whose sequence number is not greater than
// the instance's LastUDPSeq is rejected as a replay and changes nothing;
// an applied one raises LastUDPSeq. Beats without udp_seq are not checked.
func (s *State) BeatBatch(index uint64, c *fsmpb.BeatBatch) (BeatResult, []Event) {
	a := beatApplier{s: s, index: index, now: c.GetNowUnixNs(), res: BeatResult{Index: index}}
	// Beats of one service tend to come together (a client beats its
	// instances in one frame): reuse the service's index between them.
	var service string
	var ids map[string]int
	for _, b := range c.GetBeats() {
		if ids == nil || b.GetService() != service {
			service, ids = b.GetService(), s.services[b.GetService()]
		}
		pos, ok := ids[b.GetId()]
		if !ok {
			a.reject(b.GetService(), b.GetId(), b.GetIncarnation(), b.GetUdpSeq(), RejectUnknown, 0)
			continue
		}
		if reason, current := a.apply(pos, b.GetIncarnation(), b.GetUdpSeq()); reason != 0 {
			a.reject(b.GetService(), b.GetId(), b.GetIncarnation(), b.GetUdpSeq(), reason, current)
		}
	}
	return a.res, a.events
}

func reacquired(index uint64, now int64, old, next Instance) Event {
	return Event{
		Type:          EventReacquired,
		Index:         index,
		Instance:      next,
		SinceLastBeat: time.Duration(now - old.LastBeatAt),
		LastBeatAt:    old.LastBeatAt,
		At:            now,
	}
}

// current returns the instance named by a condition if it is still the one
// the proposer saw: same incarnation and no beat since.
func (s *State) current(cond *fsmpb.Condition) (Instance, bool) {
	in, ok := s.Get(cond.GetService(), cond.GetId())
	if !ok || in.Incarnation != cond.GetIncarnation() || in.LastBeatIndex != cond.GetLastBeatIndex() {
		return Instance{}, false
	}
	return in, true
}

// MarkSuspect marks each named HEALTHY instance SUSPECT if its incarnation and
// LastBeatIndex still match the condition; other entries are skipped.
func (s *State) MarkSuspect(index uint64, c *fsmpb.MarkSuspect) (ConditionalResult, []Event) {
	now := c.GetNowUnixNs()
	res := ConditionalResult{Index: index}
	var events []Event
	for _, cond := range c.GetEntries() {
		old, ok := s.current(cond)
		if !ok || old.State != StateHealthy {
			res.Skipped++
			continue
		}
		next := old
		next.State = StateSuspect
		next.ModifyIndex = index
		s.put(next)
		res.Applied++
		events = append(events, Event{
			Type:          EventSuspect,
			Index:         index,
			Instance:      next,
			SinceLastBeat: time.Duration(now - old.LastBeatAt),
			LastBeatAt:    old.LastBeatAt,
			At:            now,
		})
	}
	return res, events
}

// Expire removes each named instance if its incarnation and LastBeatIndex
// still match the condition, whatever its state; other entries are skipped,
// so a beat or re-registration that raced the expiry wins.
func (s *State) Expire(index uint64, c *fsmpb.Expire) (ConditionalResult, []Event) {
	now := c.GetNowUnixNs()
	res := ConditionalResult{Index: index}
	var events []Event
	for _, cond := range c.GetEntries() {
		old, ok := s.current(cond)
		if !ok {
			res.Skipped++
			continue
		}
		s.remove(old.Service, old.ID)
		res.Applied++
		events = append(events, Event{
			Type:          EventExpired,
			Index:         index,
			Instance:      old,
			SinceLastBeat: time.Duration(now - old.LastBeatAt),
			LastBeatAt:    old.LastBeatAt,
			At:            now,
		})
	}
	return res, events
}

// SetBeatSecret sets the cluster beat secret if there is none yet: the
// first one applied wins, so that the keys handed out never change.
func (s *State) SetBeatSecret(index uint64, c *fsmpb.BeatSecretSet) BeatSecretResult {
	if s.beatSecret != nil || len(c.GetSecret()) == 0 {
		return BeatSecretResult{Index: index}
	}
	s.beatSecret = slices.Clone(c.GetSecret())
	return BeatSecretResult{Index: index, Set: true}
}

// BeatSecret returns the cluster beat secret, or nil. The caller must not
// modify it.
func (s *State) BeatSecret() []byte { return s.beatSecret }

// SetNode records a node's addresses; both addresses empty removes the node.
func (s *State) SetNode(c *fsmpb.NodeMeta) {
	if c.GetGrpcAddress() == "" && c.GetHttpAddress() == "" {
		delete(s.nodes, c.GetNodeId())
		return
	}
	s.nodes[c.GetNodeId()] = NodeMeta{
		NodeID:      c.GetNodeId(),
		GRPCAddress: c.GetGrpcAddress(),
		HTTPAddress: c.GetHttpAddress(),
	}
}

// Get returns one instance.
func (s *State) Get(service, id string) (Instance, bool) {
	pos, ok := s.lookup(service, id)
	if !ok {
		return Instance{}, false
	}
	return *s.insts.at(pos), true
}

// Service returns the instances of service sorted by ID, leaving out SUSPECT
// ones unless includeSuspect is set.
func (s *State) Service(service string, includeSuspect bool) []Instance {
	var out []Instance
	for _, pos := range s.services[service] {
		if in := *s.insts.at(pos); includeSuspect || in.State != StateSuspect {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, compareInstances)
	return out
}

// Services summarizes every service that has instances, sorted by name.
func (s *State) Services() []ServiceSummary {
	var out []ServiceSummary
	for name, ids := range s.services {
		suspect := s.suspects[name]
		out = append(out, ServiceSummary{Service: name, Healthy: len(ids) - suspect, Suspect: suspect})
	}
	slices.SortFunc(out, func(a, b ServiceSummary) int { return cmp.Compare(a.Service, b.Service) })
	return out
}

// Instances returns every instance sorted by (Service, ID).
func (s *State) Instances() []Instance {
	out := s.unsorted()
	slices.SortFunc(out, compareInstances)
	return out
}

// unsorted copies every instance in no meaningful order; callers sort.
func (s *State) unsorted() []Instance {
	if s.insts.len() == 0 {
		return nil
	}
	out := make([]Instance, 0, s.insts.len())
	s.insts.each(func(in *Instance) { out = append(out, *in) })
	return out
}

// Node returns one node's metadata.
func (s *State) Node(id string) (NodeMeta, bool) {
	n, ok := s.nodes[id]
	return n, ok
}

// Nodes returns every node's metadata sorted by NodeID.
func (s *State) Nodes() []NodeMeta {
	out := slices.Collect(maps.Values(s.nodes))
	slices.SortFunc(out, compareNodes)
	return out
}

func compareInstances(a, b Instance) int { return compareInstancePtrs(&a, &b) }

func compareNodes(a, b NodeMeta) int {
	return cmp.Compare(a.NodeID, b.NodeID)
}

// cloneMetadata copies m so that the state never aliases a caller's map; an
// empty map becomes nil so that equal states compare equal. The keys are
// interned: a handful of label names repeat across every instance.
func cloneMetadata(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = v
	}
	return out
}

// intern returns the canonical copy of s: the state keeps one copy of
// each service name (and metadata key), not one per instance. Interning
// changes only where the bytes live, never a value, so Apply stays a pure
// function of the state and the entry.
func intern(s string) string { return unique.Make(s).Value() }
