package fsm

import (
	"context"
	"fmt"
	"reflect"

	"google.golang.org/protobuf/proto"
)

// Entry is an encoded command: the data of one log entry. Only Propose makes
// a non-zero one, so a Proposer is never handed bytes that Decode would
// reject; a Proposer must refuse the zero Entry (empty data).
type Entry struct {
	t    MessageType
	data []byte
}

// Type returns the command's type.
func (e Entry) Type() MessageType { return e.t }

// Data returns the log entry's data: the type byte and the payload. The
// caller must not modify it.
func (e Entry) Data() []byte { return e.data }

// Proposer proposes an entry through Raft; the node implements it, tests
// fake it.
type Proposer interface {
	// Apply proposes e, waits until it is applied or ctx is done, and returns
	// the FSM's response. A domain error in the response (ErrNotFound,
	// ErrFenced) is returned as the error; an error meaning this node does
	// not lead wraps ErrLeadershipLost.
	Apply(ctx context.Context, e Entry) (any, error)
}

// Propose encodes msg as the command the table declares for its message
// type, proposes it through p and returns the FSM's response as an R. It
// fails without proposing if msg is not a command or R is not the response
// type the table declares for it.
func Propose[R any](ctx context.Context, p Proposer, msg proto.Message) (R, error) {
	var zero R
	t, ok := TypeOf(msg)
	if !ok {
		return zero, fmt.Errorf("fsm: propose: %T is not a command", msg)
	}
	if want := commands[t].response; want != reflect.TypeFor[R]() {
		return zero, fmt.Errorf("fsm: propose %v: the response is a %v, not a %T", t, want, zero)
	}
	data, err := Encode(t, msg)
	if err != nil {
		return zero, err
	}
	resp, err := p.Apply(ctx, Entry{t: t, data: data})
	if err != nil {
		return zero, err
	}
	r, ok := resp.(R)
	if !ok {
		return zero, fmt.Errorf("fsm: propose %v: the response is %T, want %T", t, resp, zero)
	}
	return r, nil
}
