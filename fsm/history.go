package fsm

import (
	"fmt"
	"sort"
)

// history is a bounded ring of the most recent events, in index order.
// Every event with Index > floor is kept; older ones may be gone.
type history struct {
	size  int
	buf   []Event // grows to size, then wraps around
	start int     // position of the oldest event; non-zero only once full
	floor uint64
}

func newHistory(size int) history {
	return history{size: size}
}

func (h *history) len() int { return len(h.buf) }

// at returns the i-th oldest event.
func (h *history) at(i int) *Event { return &h.buf[(h.start+i)%len(h.buf)] }

// add appends events, evicting the oldest ones once the ring is full.
func (h *history) add(events []Event) {
	for _, e := range events {
		if len(h.buf) < h.size {
			h.buf = append(h.buf, e)
			continue
		}
		h.floor = h.buf[h.start].Index
		h.buf[h.start] = e
		h.start = (h.start + 1) % len(h.buf)
	}
}

// reset drops every event; events up to floor are no longer available.
func (h *history) reset(floor uint64) {
	clear(h.buf) // drop references to metadata maps
	h.buf = h.buf[:0]
	h.start = 0
	h.floor = floor
}

// eventsAfter implements FSM.EventsAfter; applied is the FSM's applied index,
// which no event exceeds.
func (h *history) eventsAfter(service string, after, applied uint64, limit int) ([]Event, uint64, error) {
	if after < h.floor {
		return nil, after, fmt.Errorf("%w: asked for events after index %d, history starts after %d",
			ErrCompacted, after, h.floor)
	}
	var out []Event
	first := sort.Search(h.len(), func(i int) bool { return h.at(i).Index > after })
	for i := first; i < h.len(); i++ {
		e := h.at(i)
		if limit > 0 && len(out) >= limit {
			// Full: stop at the next index, never in the middle of one.
			if last := out[len(out)-1].Index; e.Index != last {
				return out, last, nil
			}
		}
		if service == "" || e.Instance.Service == service {
			out = append(out, *e)
		}
	}
	// Every event up to the applied index has been examined.
	return out, max(after, applied), nil
}
