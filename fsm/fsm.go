package fsm

import (
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// Config configures an FSM. Zero fields take their defaults.
type Config struct {
	// HistorySize is the number of events kept for watchers; default
	// DefaultHistorySize.
	HistorySize int
	// Logger receives the FSM's logs; the default discards them.
	Logger *slog.Logger
	// ObserveStamp, if set, is called after every applied command that
	// carries the proposer's timestamp, with that timestamp (Unix ns). The
	// node uses it to estimate its clock skew against the leader; it has no
	// effect on the state. It must be fast and must not call the FSM.
	ObserveStamp func(unixNs int64)
	// ObserveEvents, if set, is called after every applied command that
	// produced events, with those events, under the FSM's write lock. The
	// node counts them for its metrics. It must be fast, must not call the
	// FSM and must not keep the slice.
	ObserveEvents func(events []Event)
	// OnRestore, if set, is called after Restore has swapped a snapshot in,
	// with the applied index it restored, outside the FSM's lock. The node
	// uses it to make the leader's expiry checker grant its failover grace
	// again: restored instances carry their old last-beat timestamps.
	OnRestore func(index uint64)
}

// DefaultHistorySize is the default Config.HistorySize. It holds one whole
// sweep of the expiry checker with room to spare (beatcheck's defaults:
// 10,000 SUSPECT marks and 1,000 expiries, each entry's events added at
// once): with less, one large sweep would drop every watcher of the node
// behind the entry's own index and turn each watch into a reset. At about
// 200 bytes an event it is a few MiB.
const DefaultHistorySize = 16_384

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		HistorySize: DefaultHistorySize,
		Logger:      slog.New(slog.DiscardHandler),
	}
}

// Validate reports values New cannot honour: a negative HistorySize (New
// would use the default instead).
func (c Config) Validate() error {
	if c.HistorySize < 0 {
		return fmt.Errorf("fsm: HistorySize is %d, must be >= 0 (0 means %d)", c.HistorySize, DefaultHistorySize)
	}
	return nil
}

// FSM is the registry's Raft state machine: it decodes committed log entries,
// applies them to its State, keeps a bounded history of the resulting events
// and serves consistent reads. It implements raft.FSM.
type FSM struct {
	logger        *slog.Logger
	observeStamp  func(int64)
	observeEvents func([]Event)
	onRestore     func(uint64)

	mu      sync.RWMutex
	state   *State
	applied uint64
	// restored is the applied index of the last Restore: ACLIndex never
	// reports less, so that caches of the ACL state see a restore.
	restored uint64
	history  history
	changed  chan struct{} // closed and replaced at every Apply and Restore
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM. Zero (or negative) fields of cfg take defaults.
func New(cfg Config) *FSM {
	def := DefaultConfig()
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = def.HistorySize
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	return &FSM{
		logger:        cfg.Logger,
		observeStamp:  cfg.ObserveStamp,
		observeEvents: cfg.ObserveEvents,
		onRestore:     cfg.OnRestore,
		state:         NewState(),
		history:       newHistory(cfg.HistorySize),
		changed:       make(chan struct{}),
	}
}

// Apply applies one committed log entry and returns its response: a
// *RegisterResult, *DeregisterResult, *BeatResult, *ConditionalResult,
// *NodeMetaResult, *ACLResult or *WriteBatchResult, an error wrapping
// ErrNotFound or ErrFenced, or nil for an unknown type marked
// IgnoreUnknownTypeFlag. It panics on an entry it cannot
// decode, so that a replica stops rather than diverge.
func (f *FSM) Apply(l *raft.Log) any {
	if len(l.Data) > 0 && MessageType(l.Data[0]) == BeatBatchType {
		return f.applyBeatBatch(l)
	}
	t, msg, err := Decode(l.Data)
	if err != nil {
		f.undecodable(l, err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	defer f.notify()

	index := l.Index
	if msg == nil {
		f.logger.Warn("skipping log entry of unknown type", "index", index, "type", uint8(t))
		return nil
	}
	resp, events, err := commands[t].apply(f.state, index, msg)
	if err != nil {
		return err
	}
	f.history.add(events)
	if len(events) > 0 && f.observeEvents != nil {
		f.observeEvents(events)
	}
	if st, ok := msg.(interface{ GetNowUnixNs() int64 }); ok && f.observeStamp != nil {
		f.observeStamp(st.GetNowUnixNs())
	}
	return resp
}

// applyBeatBatch is Apply of a BeatBatch, read in place from the entry
// (see readBeatBatch) instead of decoded into messages.
func (f *FSM) applyBeatBatch(l *raft.Log) any {
	body := l.Data[1:]
	now, err := readBeatBatch(body, nil)
	if err != nil {
		f.undecodable(l, fmt.Errorf("%w: %v payload: %v", ErrUndecodable, BeatBatchType, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	defer f.notify()
	res, events := f.state.beatBatchWire(l.Index, now, body)
	f.history.add(events)
	if len(events) > 0 && f.observeEvents != nil {
		f.observeEvents(events)
	}
	if f.observeStamp != nil {
		f.observeStamp(now)
	}
	return &res
}

// undecodable logs and panics on an entry Apply cannot decode, so that a
// replica stops rather than diverge.
func (f *FSM) undecodable(l *raft.Log, err error) {
	f.logger.Error("cannot decode log entry", "index", l.Index, "term", l.Term, "error", err)
	panic(fmt.Sprintf("fsm: cannot apply log entry at index %d (term %d): %v", l.Index, l.Term, err))
}

// notify wakes the waiters on Changed. Callers hold the write lock.
func (f *FSM) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Snapshot takes a point-in-time copy of the state under the write lock in
// O(chunks), not O(instances): it shares the state's instance chunks, which
// Apply copies before its first write to each (see store). The returned
// snapshot sorts and encodes the instances in Persist without the FSM's
// lock, concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return f.snapshot(), nil
}

// snapshot takes the write lock: freezing the chunks moves the store's
// generation, which two readers must not do at once.
func (f *FSM) snapshot() *snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.snapshot(f.applied)
}

// Restore replaces the state with the snapshot read from rc. The snapshot is
// decoded in full into a new State first, so a failed Restore leaves the FSM
// untouched. On success the applied index is the snapshot's, the history is
// empty with its floor at that index, and Changed is closed. The caller closes
// rc, as raft does.
//
// The applied index never goes back and always moves: restoring over an FSM
// that has applied the snapshot's index or beyond (an operator's restore of a
// backup, see PrepareRestore) sets it to one past the FSM's own, so that
// every watcher, whatever it has seen, gets a reset.
func (f *FSM) Restore(rc io.ReadCloser) error {
	st, index, err := readSnapshot(rc)
	if err != nil {
		f.logger.Error("restore failed", "error", err)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.mu.Lock()
	if f.applied > 0 && index <= f.applied {
		index = f.applied + 1
	}
	f.state = st
	f.applied = index
	f.restored = index
	f.history.reset(index)
	f.notify()
	f.mu.Unlock()
	f.logger.Info("restored snapshot", "index", index)
	if f.onRestore != nil {
		f.onRestore(index)
	}
	return nil
}

// AppliedIndex returns the index of the last applied log entry (or of the
// restored snapshot).
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// GetService returns the instances of service sorted by ID, SUSPECT ones only
// if includeSuspect, and the applied index they reflect.
func (f *FSM) GetService(service string, includeSuspect bool) ([]Instance, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Service(service, includeSuspect), f.applied
}

// ListServices summarizes the services that have instances, sorted by name,
// and returns the applied index it reflects.
func (f *FSM) ListServices() ([]ServiceSummary, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Services(), f.applied
}

// scanGroup is the number of store chunks ScanInstances visits under one
// hold of the read lock: 32 chunks are 4,096 instances, tens of
// microseconds, so that a scan of a million instances never keeps Apply
// waiting for the whole scan (tens of milliseconds, ten times a second on
// the leader).
const scanGroup = 32

// ScanInstances calls fn for every instance, in no particular order,
// without copying the state, holding the read lock for a group of chunks
// at a time: fn must be quick, must not call the FSM and must not keep the
// pointer. The expiry checker scans this way.
//
// Applies may run between groups, so a scan is not a point-in-time view:
// an instance that exists from the start to the end of the scan is visited
// exactly once, unless a removal during the scan moves it (a removal moves
// the last instance into the hole) to a position already scanned: then
// this scan misses it and the next one sees it. An instance removed or
// registered during the scan may or may not be visited, and a
// re-registration may be visited as both its old and its new incarnation.
// Nothing decided from a scan may assume more: the checker's proposals are
// conditional on each instance's incarnation and last beat index.
func (f *FSM) ScanInstances(fn func(*Instance)) {
	for from := 0; ; from += scanGroup {
		f.mu.RLock()
		more := f.state.scanChunks(from, from+scanGroup, fn)
		f.mu.RUnlock()
		if !more {
			return
		}
	}
}

// ScanDue is ScanInstances for the expiry checker: it calls fn for every
// instance due at now (LastBeatAt + min(SuspectAfter, TTL) <= now, Unix
// ns), and
// perhaps for others, under the same locking and with the same caveat
// (an instance moved by a concurrent removal may be missed until the next
// scan). It skips every chunk of the store in which no instance is due,
// by a lower bound of the deadlines that each write lowers and each scan
// of the chunk makes exact; a sweep of instances that all beat in time
// reads only the chunks whose bound it has reached.
func (f *FSM) ScanDue(now int64, fn func(*Instance)) {
	for from := 0; ; from += scanGroup {
		f.mu.RLock()
		more := f.state.scanDueChunks(now, from, from+scanGroup, fn)
		f.mu.RUnlock()
		if !more {
			return
		}
	}
}

// InstanceCount returns the number of instances.
func (f *FSM) InstanceCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Len()
}

// Instance returns one instance.
func (f *FSM) Instance(service, id string) (Instance, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Get(service, id)
}

// Instances returns every instance sorted by (Service, ID) and the applied
// index it reflects.
func (f *FSM) Instances() ([]Instance, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Instances(), f.applied
}

// Node returns one node's metadata.
func (f *FSM) Node(id string) (NodeMeta, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Node(id)
}

// Nodes returns every node's metadata sorted by NodeID.
func (f *FSM) Nodes() []NodeMeta {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Nodes()
}

// Hash returns the hex SHA-256 of the canonical encoding of the state: the
// snapshot stream, applied index included. Replicas that applied the same log
// have the same hash.
func (f *FSM) Hash() string {
	h, _ := f.HashIndex()
	return h
}

// HashIndex returns Hash and the applied index it was taken at.
func (f *FSM) HashIndex() (string, uint64) {
	s := f.snapshot()
	return s.hash(), s.index
}

// Changed returns a channel that is closed at the next Apply or Restore. Take
// it before reading, so that a change between the read and the wait is not
// missed.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// Reset returns every instance of service ("" means every service), SUSPECT
// ones included, sorted by (Service, ID), and the applied index, read under
// one lock with the history: the events after that index are exactly the
// changes the instances do not reflect. A watcher starts (or restarts after
// ErrCompacted) with Reset, then follows EventsAfter from the returned index.
func (f *FSM) Reset(service string) ([]Instance, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if service == "" {
		return f.state.Instances(), f.applied
	}
	return f.state.Service(service, true), f.applied
}

// EventsAfter returns the kept events with Index > after, of service only
// unless service is "", in index order, and next, the index to pass as after
// in the following call.
//
// It returns at most about limit events (limit <= 0 means no limit): it may
// return more so as never to split the events of one Raft index across two
// calls. When it stops at the limit, next is the index of the last returned
// event; otherwise every event up to the applied index has been examined and
// next is the applied index (or after, if that is higher), even when no event
// matched. next never skips an event.
//
// It fails with ErrCompacted when events after after may have been evicted
// (after is below the history's floor, which Restore also raises to the
// snapshot's index); the watcher must Reset.
func (f *FSM) EventsAfter(service string, after uint64, limit int) (events []Event, next uint64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.history.eventsAfter(service, after, f.applied, limit)
}
