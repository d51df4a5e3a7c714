package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// Kind is an operation's kind.
type Kind int

// The operations a history holds.
const (
	Register   Kind = iota + 1 // Registry.Register of one instance
	Deregister                 // Registry.Deregister of one instance (any incarnation)
	Get                        // Registry.GetService, LINEARIZABLE, suspects included
)

func (k Kind) String() string {
	switch k {
	case Register:
		return "register"
	case Deregister:
		return "deregister"
	case Get:
		return "get"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Input is what a client asked.
type Input struct {
	Kind        Kind   `json:"kind"`
	Service     string `json:"service"`
	ID          string `json:"id,omitempty"`          // Register, Deregister
	Incarnation uint64 `json:"incarnation,omitempty"` // Register
}

// Outcome is what a client learnt.
type Outcome int

// The outcomes.
const (
	// Unknown: the call failed in a way that does not say whether it took
	// effect (timeout, UNAVAILABLE, connection lost). The operation has no
	// return.
	Unknown Outcome = iota
	// OK: the write was acknowledged, or the read answered.
	OK
	// NotFound: a deregister of an absent instance (nothing changed).
	NotFound
	// Fenced: a register with a lower incarnation than the stored one
	// (FAILED_PRECONDITION; nothing changed).
	Fenced
	// Failed: the write was refused before anything was proposed (no
	// leader known, not the leader). The history drops it.
	Failed
)

func (o Outcome) String() string {
	return [...]string{"unknown", "ok", "not-found", "fenced", "failed"}[o]
}

// MarshalText makes outcomes readable in the history file.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Output is what the registry answered.
type Output struct {
	Outcome Outcome `json:"outcome"`
	// Instances are a Get's answer as sorted "id@incarnation".
	Instances []string `json:"instances,omitempty"`
	// Index is the Raft index the answer reflects.
	Index uint64 `json:"index,omitempty"`
	// Err is the error of an Unknown outcome, for the history file.
	Err string `json:"error,omitempty"`
}

// Member formats one instance of a Get answer.
func Member(id string, incarnation uint64) string { return fmt.Sprintf("%s@%d", id, incarnation) }

// Op is one recorded operation. Call and Return are offsets on the
// history's monotonic clock; Return is negative while pending or when the
// outcome is Unknown.
type Op struct {
	Client int           `json:"client"`
	Node   string        `json:"node"`
	Input  Input         `json:"input"`
	Output Output        `json:"output"`
	Call   time.Duration `json:"call_ns"`
	Return time.Duration `json:"return_ns"`
}

// Done reports whether the operation has a known outcome.
func (o Op) Done() bool { return o.Return >= 0 }

// History is a concurrent record of operations.
type History struct {
	start   time.Time
	mu      sync.Mutex
	ops     []Op
	dropped int
}

// NewHistory starts an empty history; its clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Pending is an operation that was called and has not returned.
type Pending struct {
	h *History
	i int
}

// Call records an invocation by client (a small integer, one per
// goroutine) through node.
func (h *History) Call(client int, node string, in Input) Pending {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, Op{Client: client, Node: node, Input: in, Call: time.Since(h.start), Return: -1})
	return Pending{h: h, i: len(h.ops) - 1}
}

// Return records the answer; an Unknown outcome leaves the operation
// without a return. A Failed write and a Get whose outcome is not OK are
// dropped: they constrain nothing.
func (p Pending) Return(out Output) {
	now := time.Since(p.h.start)
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	op := &p.h.ops[p.i]
	op.Output = out
	if out.Outcome != Unknown {
		op.Return = now
	}
	if out.Outcome == Failed || op.Input.Kind == Get && out.Outcome != OK {
		op.Input.Kind = 0 // dropped by Ops
		p.h.dropped++
	}
}

// Ops returns the recorded operations, in call order, without dropped reads.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(h.ops), func(o Op) bool { return o.Input.Kind == 0 })
}

// dialFailure is in the message of grpc-go's own UNAVAILABLE for a call it
// could not send because it could not connect (to a killed node): no
// server answered, so there is no WriteOutcome detail, and the text is all
// grpc-go gives.
const dialFailure = "transport: Error while dialing"

// OutcomeOf classifies the error of a write: nil is OK, NOT_FOUND and
// FAILED_PRECONDITION are definite refusals, an UNAVAILABLE whose
// registry.v1.WriteOutcome says it was not proposed, or that gRPC could not
// send, is Failed; anything else may or may not have taken effect.
func OutcomeOf(err error) Output {
	if err == nil {
		return Output{Outcome: OK}
	}
	switch st := status.Convert(err); st.Code() {
	case codes.NotFound:
		return Output{Outcome: NotFound}
	case codes.FailedPrecondition:
		return Output{Outcome: Fenced}
	case codes.Unavailable:
		if notProposed(st) {
			return Output{Outcome: Failed, Err: st.Message()}
		}
	}
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "deadline exceeded: " + msg
	}
	return Output{Outcome: Unknown, Err: strings.TrimSpace(msg)}
}

// notProposed reports whether an UNAVAILABLE write certainly was not
// applied: the server's WriteOutcome says so, or, with none, gRPC could not
// connect to send it.
func notProposed(st *status.Status) bool {
	for _, d := range st.Details() {
		if o, ok := d.(*registryv1.WriteOutcome); ok {
			return !o.GetProposed()
		}
	}
	return strings.Contains(st.Message(), dialFailure)
}

// Counts summarise a history.
type Counts struct {
	Ops, Writes, AckedWrites, UnknownWrites, Reads int
	// Dropped are the failed reads and the writes refused before any
	// proposal, which the checks do not see.
	Dropped int
}

// Count counts the history's operations.
func (h *History) Count() Counts {
	h.mu.Lock()
	c := Counts{Dropped: h.dropped}
	h.mu.Unlock()
	for _, o := range h.Ops() {
		c.Ops++
		if o.Input.Kind == Get {
			c.Reads++
			continue
		}
		c.Writes++
		switch o.Output.Outcome {
		case OK:
			c.AckedWrites++
		case Unknown:
			c.UnknownWrites++
		}
	}
	return c
}

// Fork returns an empty history on the same clock, for operations that
// must be checked apart from h (a negative control) and then with it
// (Merge).
func (h *History) Fork() *History { return &History{start: h.start} }

// Merge returns a history holding the operations of every history given,
// which must share one clock (see Fork), in call order.
func Merge(hs ...*History) *History {
	m := &History{start: hs[0].start}
	for _, h := range hs {
		if !h.start.Equal(m.start) {
			panic("check.Merge: histories on different clocks")
		}
		m.ops = append(m.ops, h.Ops()...)
		h.mu.Lock()
		m.dropped += h.dropped
		h.mu.Unlock()
	}
	slices.SortStableFunc(m.ops, func(a, b Op) int { return cmpDuration(a.Call, b.Call) })
	return m
}

func cmpDuration(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Recovery returns, for each fault time (on the history's clock), how long
// after it the first write called at or after the fault was acknowledged:
// the failover time as clients see it. A fault after which no write was
// acknowledged is left out.
func (h *History) Recovery(faults []time.Duration) []time.Duration {
	ops := h.Ops()
	var out []time.Duration
	for _, f := range faults {
		first := time.Duration(-1)
		for _, o := range ops {
			if o.Call < f || o.Input.Kind == Get || o.Output.Outcome != OK {
				continue
			}
			if first < 0 || o.Return < first {
				first = o.Return
			}
		}
		if first >= 0 {
			out = append(out, first-f)
		}
	}
	return out
}
