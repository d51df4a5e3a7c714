package fsm

import (
	"math"
	"sync/atomic"
)

// chunkSize is the number of instances in one chunk: 128 instances of
// 144 bytes are 18 KiB, one small-object size class, so that copying a
// chunk on its first write after a snapshot costs a few microseconds, and a
// million instances are 7,813 chunks, whose pointers a snapshot copies in
// microseconds.
const chunkSize = 128

// chunk is a fixed-size block of the instance store. gen is the store
// generation that owns it: a chunk whose gen is older than the store's may
// be shared with a snapshot and is never written again; the store copies it
// first (copy on write).
type chunk struct {
	gen   uint64
	items [chunkSize]Instance
}

// store holds the instances densely, in no meaningful order, in
// fixed-size chunks that snapshots share copy-on-write: freeze makes every
// current chunk immutable in O(chunks), and the next write to a frozen
// chunk copies it. Reads never copy. A store is not safe for concurrent
// use; the chunks a freeze returned are, since nothing writes them again.
type store struct {
	chunks []*chunk
	// due[ci] is a lower bound of dueAt over the instances of chunks[ci]
	// (see eachDue): every write that places or changes an instance lowers
	// it, a scan that reads the whole chunk sets it to the true minimum.
	// It lives beside the chunks, not in them, so that it is never frozen
	// with a chunk; it is derived data, in no snapshot and no hash. Scans
	// store to it under the read lock: access it atomically.
	due []int64
	n   int
	gen uint64
	// owned reports that some chunk has gen == store.gen (written since
	// the last freeze): a freeze with nothing owned need not move gen,
	// so back-to-back snapshots do not make every chunk copy again.
	owned bool
}

// len returns the number of instances.
func (s *store) len() int { return s.n }

// at returns the instance at pos for reading only.
func (s *store) at(pos int) *Instance {
	return &s.chunks[pos/chunkSize].items[pos%chunkSize]
}

// mut returns the instance at pos for writing, copying its chunk first if
// a snapshot may share it.
func (s *store) mut(pos int) *Instance {
	ci := pos / chunkSize
	c := s.chunks[ci]
	if c.gen != s.gen {
		cp := new(chunk)
		*cp = *c
		cp.gen = s.gen
		s.chunks[ci] = cp
		s.owned = true
		c = cp
	}
	return &c.items[pos%chunkSize]
}

// set writes in at pos and lowers its chunk's due bound.
func (s *store) set(pos int, in Instance) {
	*s.mut(pos) = in
	s.lower(pos)
}

// lower lowers the due bound of pos's chunk to the instance's dueAt. Every
// write through mut must call it (set does), whichever way the instance's
// deadline moved: a beat may move LastBeatAt backwards under a new
// leader's clock.
func (s *store) lower(pos int) {
	b := &s.due[pos/chunkSize]
	if d := dueAt(s.at(pos)); d < atomic.LoadInt64(b) {
		atomic.StoreInt64(b, d)
	}
}

// dueAt is the time (Unix ns) from which the expiry checker may act on in:
// LastBeatAt + min(SuspectAfter, TTL), saturated at the int64 range. The
// checker keeps an instance until its suspect_after has passed unless its
// TTL has (see beatcheck's classify; the API refuses suspect_after > ttl,
// but the state does not rely on it), whatever its fences.
func dueAt(in *Instance) int64 {
	d := min(in.SuspectAfter, in.TTL)
	sum := in.LastBeatAt + int64(d)
	switch {
	case d > 0 && sum < in.LastBeatAt:
		return math.MaxInt64
	case d < 0 && sum > in.LastBeatAt:
		return math.MinInt64
	}
	return sum
}

// push appends in and returns its position.
func (s *store) push(in Instance) int {
	if s.n == len(s.chunks)*chunkSize {
		s.chunks = append(s.chunks, &chunk{gen: s.gen})
		s.due = append(s.due, math.MaxInt64)
		s.owned = true
	}
	pos := s.n
	s.n++
	s.set(pos, in)
	return pos
}

// pop removes the last instance, clearing its slot for the GC, and drops
// a chunk left empty.
func (s *store) pop() {
	s.n--
	*s.mut(s.n) = Instance{}
	if s.n%chunkSize == 0 {
		last := len(s.chunks) - 1
		s.chunks[last] = nil
		s.chunks = s.chunks[:last]
		s.due = s.due[:last]
	}
}

// each calls fn for every instance, in store order, for reading only.
func (s *store) each(fn func(*Instance)) {
	s.eachIn(0, len(s.chunks), fn)
}

// eachIn calls fn for every instance of chunks [from, to), for reading
// only, and reports whether chunks remain after to.
func (s *store) eachIn(from, to int, fn func(*Instance)) bool {
	for ci := from; ci < min(to, len(s.chunks)); ci++ {
		items := s.chunks[ci].items[:min(chunkSize, s.n-ci*chunkSize)]
		for i := range items {
			fn(&items[i])
		}
	}
	return to < len(s.chunks)
}

// eachDue is eachIn over the chunks whose due bound is at most now: it
// skips every chunk none of whose instances is due at now (dueAt <= now),
// calls fn for every instance of the others, due or not, and sets their
// bound to the true minimum. It is safe under a read lock (the bound is
// stored atomically; concurrent scans store the same minimum).
func (s *store) eachDue(now int64, from, to int, fn func(*Instance)) bool {
	for ci := from; ci < min(to, len(s.chunks)); ci++ {
		b := &s.due[ci]
		if atomic.LoadInt64(b) > now {
			continue
		}
		low := int64(math.MaxInt64)
		items := s.chunks[ci].items[:min(chunkSize, s.n-ci*chunkSize)]
		for i := range items {
			fn(&items[i])
			low = min(low, dueAt(&items[i]))
		}
		atomic.StoreInt64(b, low)
	}
	return to < len(s.chunks)
}

// freeze returns a point-in-time view of the instances that later writes
// to the store do not change: the chunk pointers, which no write touches
// again. It costs O(chunks).
func (s *store) freeze() frozen {
	if s.owned {
		s.gen++
		s.owned = false
	}
	return frozen{chunks: append([]*chunk(nil), s.chunks...), n: s.n}
}

// frozen is a store's instances at a freeze: immutable, safe to read from
// any goroutine.
type frozen struct {
	chunks []*chunk
	n      int
}

// all returns pointers to every instance, in store order.
func (f frozen) all() []*Instance {
	out := make([]*Instance, 0, f.n)
	for i := range f.n {
		out = append(out, &f.chunks[i/chunkSize].items[i%chunkSize])
	}
	return out
}
