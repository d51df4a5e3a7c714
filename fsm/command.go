package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// MessageType is the first byte of every log entry and names the protobuf
// message that follows. Types are append-only: a number is never reused or
// renumbered, because the log lives on disk for years.
type MessageType uint8

// The command types. New commands take the next free number; a new command
// that older nodes may safely skip is proposed with IgnoreUnknownTypeFlag set.
const (
	RegisterType        MessageType = 1
	DeregisterType      MessageType = 2
	BeatBatchType       MessageType = 3
	MarkSuspectType     MessageType = 4
	ExpireType          MessageType = 5
	NodeMetaType        MessageType = 6
	ACLBootstrapType    MessageType = 7
	ACLPolicySetType    MessageType = 8
	ACLPolicyDeleteType MessageType = 9
	ACLTokenSetType     MessageType = 10
	ACLTokenDeleteType  MessageType = 11
	BeatSecretSetType   MessageType = 12
	WriteBatchType      MessageType = 13

	// IgnoreUnknownTypeFlag: a type byte with this bit set, unknown to this
	// node, is skipped (Apply returns nil) instead of fail-stop. A node that
	// knows the type (the byte without the flag) applies it as usual.
	IgnoreUnknownTypeFlag MessageType = 128
)

// command is one row of the command table: everything the package knows
// about a command type, declared once.
type command struct {
	name string
	// message is the payload's protobuf message type.
	message protoreflect.MessageType
	// apply applies a decoded message at index to the state and returns the
	// response (a pointer to a *Result type) and the events, or a domain
	// error. It must be deterministic.
	apply func(s *State, index uint64, msg proto.Message) (any, []Event, error)
	// response is the type of apply's response, which Propose checks.
	response reflect.Type
}

// commands is the command table, indexed by type number. MessageType.String,
// Encode, Decode, TypeOf, Propose and FSM.Apply all derive from it. A new
// command takes the next free number here and nowhere else.
var commands = [...]command{
	RegisterType: newCommand("Register", func(s *State, index uint64, m *fsmpb.Register) (*RegisterResult, []Event, error) {
		res, ev, err := s.Register(index, m)
		return &res, ev, err
	}),
	DeregisterType: newCommand("Deregister", func(s *State, index uint64, m *fsmpb.Deregister) (*DeregisterResult, []Event, error) {
		res, ev, err := s.Deregister(index, m)
		return &res, ev, err
	}),
	BeatBatchType: newCommand("BeatBatch", func(s *State, index uint64, m *fsmpb.BeatBatch) (*BeatResult, []Event, error) {
		res, ev := s.BeatBatch(index, m)
		return &res, ev, nil
	}),
	MarkSuspectType: newCommand("MarkSuspect", func(s *State, index uint64, m *fsmpb.MarkSuspect) (*ConditionalResult, []Event, error) {
		res, ev := s.MarkSuspect(index, m)
		return &res, ev, nil
	}),
	ExpireType: newCommand("Expire", func(s *State, index uint64, m *fsmpb.Expire) (*ConditionalResult, []Event, error) {
		res, ev := s.Expire(index, m)
		return &res, ev, nil
	}),
	NodeMetaType: newCommand("NodeMeta", func(s *State, index uint64, m *fsmpb.NodeMeta) (*NodeMetaResult, []Event, error) {
		s.SetNode(m)
		return &NodeMetaResult{Index: index}, nil, nil
	}),
	ACLBootstrapType: newCommand("ACLBootstrap", func(s *State, index uint64, m *fsmpb.ACLBootstrap) (*ACLResult, []Event, error) {
		res, err := s.ACLBootstrap(index, m)
		return &res, nil, err
	}),
	ACLPolicySetType: newCommand("ACLPolicySet", func(s *State, index uint64, m *fsmpb.ACLPolicySet) (*ACLResult, []Event, error) {
		res := s.ACLPolicySet(index, m)
		return &res, nil, nil
	}),
	ACLPolicyDeleteType: newCommand("ACLPolicyDelete", func(s *State, index uint64, m *fsmpb.ACLPolicyDelete) (*ACLResult, []Event, error) {
		res, err := s.ACLPolicyDelete(index, m)
		return &res, nil, err
	}),
	ACLTokenSetType: newCommand("ACLTokenSet", func(s *State, index uint64, m *fsmpb.ACLTokenSet) (*ACLResult, []Event, error) {
		res, err := s.ACLTokenSet(index, m)
		return &res, nil, err
	}),
	ACLTokenDeleteType: newCommand("ACLTokenDelete", func(s *State, index uint64, m *fsmpb.ACLTokenDelete) (*ACLResult, []Event, error) {
		res, err := s.ACLTokenDelete(index, m)
		return &res, nil, err
	}),
	BeatSecretSetType: newCommand("BeatSecretSet", func(s *State, index uint64, m *fsmpb.BeatSecretSet) (*BeatSecretResult, []Event, error) {
		res := s.SetBeatSecret(index, m)
		return &res, nil, nil
	}),
	WriteBatchType: newCommand("WriteBatch", func(s *State, index uint64, m *fsmpb.WriteBatch) (*WriteBatchResult, []Event, error) {
		res, ev := s.WriteBatch(index, m)
		return &res, ev, nil
	}),
}

// newCommand builds a table row from a typed apply function: the message
// type M and the response type R are taken from its signature.
func newCommand[M proto.Message, R any](name string, apply func(s *State, index uint64, m M) (R, []Event, error)) command {
	var zero M // a nil pointer still describes its message type
	return command{
		name:    name,
		message: zero.ProtoReflect().Type(),
		apply: func(s *State, index uint64, msg proto.Message) (any, []Event, error) {
			return apply(s, index, msg.(M))
		},
		response: reflect.TypeFor[R](),
	}
}

// lookup returns the table row of a type (flag stripped), or nil.
func lookup(t MessageType) *command {
	if int(t) >= len(commands) || commands[t].message == nil {
		return nil
	}
	return &commands[t]
}

// TypeOf returns the command type whose message is msg's message type, and
// false if msg is not a command.
func TypeOf(msg proto.Message) (MessageType, bool) {
	if msg == nil {
		return 0, false
	}
	name := msg.ProtoReflect().Descriptor().FullName()
	for t := range commands { // by type number
		if m := commands[t].message; m != nil && m.Descriptor().FullName() == name {
			return MessageType(t), true
		}
	}
	return 0, false
}

// String returns the command name, e.g. "Register", or "MessageType(n)".
func (t MessageType) String() string {
	c := lookup(t &^ IgnoreUnknownTypeFlag)
	if c == nil {
		return fmt.Sprintf("MessageType(%d)", uint8(t))
	}
	if t&IgnoreUnknownTypeFlag != 0 {
		return c.name + "|IgnoreUnknown"
	}
	return c.name
}

// Encode returns the type byte followed by the deterministic protobuf
// encoding (proto.MarshalOptions{Deterministic: true}) of msg. It fails if t
// is unknown or msg is not the message for t.
func Encode(t MessageType, msg proto.Message) ([]byte, error) {
	c := lookup(t &^ IgnoreUnknownTypeFlag)
	if c == nil {
		return nil, fmt.Errorf("fsm: encode: unknown message type %d", uint8(t))
	}
	if msg == nil {
		return nil, fmt.Errorf("fsm: encode %v: nil message", t)
	}
	wantName := c.message.Descriptor().FullName()
	if got := msg.ProtoReflect().Descriptor().FullName(); got != wantName {
		return nil, fmt.Errorf("fsm: encode %v: message is %s, want %s", t, got, wantName)
	}
	buf := []byte{byte(t)}
	buf, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf, msg)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %v: %w", t, err)
	}
	return buf, nil
}

// Decode parses a log entry's data. For a known type it returns the type
// without IgnoreUnknownTypeFlag and the decoded message. An unknown type with
// the flag set returns (t, nil, nil): the caller skips the entry. An empty
// entry, an unknown type without the flag and an undecodable payload return an
// error wrapping ErrUndecodable.
func Decode(data []byte) (MessageType, proto.Message, error) {
	if len(data) == 0 {
		return 0, nil, fmt.Errorf("%w: empty log entry", ErrUndecodable)
	}
	t := MessageType(data[0])
	base := t &^ IgnoreUnknownTypeFlag
	c := lookup(base)
	if c == nil {
		if t&IgnoreUnknownTypeFlag != 0 {
			return t, nil, nil
		}
		return t, nil, fmt.Errorf("%w: unknown message type %d", ErrUndecodable, uint8(t))
	}
	msg := c.message.New().Interface()
	if err := proto.Unmarshal(data[1:], msg); err != nil {
		return base, nil, fmt.Errorf("%w: %v payload: %v", ErrUndecodable, base, err)
	}
	return base, msg, nil
}

// InstanceState is the liveness verdict on an instance; the numbers are those
// of registry.v1.InstanceState.
type InstanceState uint8

// The instance states.
const (
	// StateHealthy: beats arrive in time.
	StateHealthy InstanceState = 1
	// StateSuspect: no beat for SuspectAfter; the instance is still registered.
	StateSuspect InstanceState = 2
)

// String returns "HEALTHY", "SUSPECT" or "InstanceState(n)".
func (s InstanceState) String() string {
	switch s {
	case StateHealthy:
		return "HEALTHY"
	case StateSuspect:
		return "SUSPECT"
	}
	return fmt.Sprintf("InstanceState(%d)", uint8(s))
}

// Instance is one registered instance as stored in the state. Values handed
// out by this package are copies, except Metadata, which is shared.
type Instance struct {
	Service string
	ID      string
	Address string
	// Metadata is never mutated after it is stored: readers share it and must
	// treat it as read-only. It is nil when empty.
	Metadata     map[string]string
	Incarnation  uint64
	BeatInterval time.Duration
	SuspectAfter time.Duration
	TTL          time.Duration
	State        InstanceState
	// CreateIndex is the Raft index that registered this incarnation.
	CreateIndex uint64
	// ModifyIndex is the Raft index of the last change (not of plain beats).
	ModifyIndex uint64
	// LastBeatIndex is the Raft index of the last beat; registration counts.
	LastBeatIndex uint64
	// LastUDPSeq is the highest UDP beat sequence number applied to this
	// incarnation (0: none); a UDP beat must carry a greater one.
	LastUDPSeq uint64
	// RegisteredAt and LastBeatAt are Unix nanoseconds by the proposing
	// leader's clock.
	RegisteredAt int64
	LastBeatAt   int64
}

// EventType says what happened to an instance; the numbers are those of
// registry.v1.EventType.
type EventType uint8

// The event types.
const (
	EventRegistered   EventType = 1
	EventUpdated      EventType = 2
	EventDeregistered EventType = 3
	EventSuspect      EventType = 4
	EventReacquired   EventType = 5
	EventExpired      EventType = 6
)

// String returns the event name, e.g. "REGISTERED", or "EventType(n)".
func (t EventType) String() string {
	switch t {
	case EventRegistered:
		return "REGISTERED"
	case EventUpdated:
		return "UPDATED"
	case EventDeregistered:
		return "DEREGISTERED"
	case EventSuspect:
		return "SUSPECT"
	case EventReacquired:
		return "REACQUIRED"
	case EventExpired:
		return "EXPIRED"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change to one instance, as kept in the history for watchers.
type Event struct {
	Type EventType
	// Index is the Raft index of the command that made the change. One
	// command may emit several events at the same index.
	Index uint64
	// Instance is the instance after the change; before it for
	// EventDeregistered and EventExpired.
	Instance Instance
	// SinceLastBeat (Suspect, Reacquired, Expired): the command's time minus
	// the previous LastBeatAt.
	SinceLastBeat time.Duration
	// LastBeatAt (Suspect, Reacquired, Expired): the previous beat's time.
	LastBeatAt int64
	// At is the command's now_unix_ns.
	At int64
}

// NodeMeta is a node's client-facing addresses.
type NodeMeta struct {
	NodeID      string
	GRPCAddress string
	HTTPAddress string
}

// ServiceSummary counts the instances of one service by state.
type ServiceSummary struct {
	Service string
	Healthy int
	Suspect int
}

// RegisterResult is the Apply response to a Register.
type RegisterResult struct {
	Index    uint64
	Instance Instance
	// Created is true when the key (service, id) was not registered before.
	Created bool
}

// DeregisterResult is the Apply response to a Deregister.
type DeregisterResult struct {
	Index uint64
	// Instance is the instance as it was before removal.
	Instance Instance
}

// WriteResult is the outcome of one write of a WriteBatch: exactly one of
// Register (a registration that applied), Deregister (a deregistration that
// applied) and Err (the domain error the write alone would have got, e.g.
// wrapping ErrFenced or ErrNotFound) is set.
type WriteResult struct {
	Register   *RegisterResult
	Deregister *DeregisterResult
	Err        error
}

// WriteBatchResult is the Apply response to a WriteBatch.
type WriteBatchResult struct {
	Index uint64
	// Results has one entry per write, in command order.
	Results []WriteResult
}

// RejectReason says why a beat was not applied; the numbers are those of
// registry.v1.BeatRejectReason.
type RejectReason uint8

// The beat rejection reasons.
const (
	// RejectUnknown: the instance is not registered.
	RejectUnknown RejectReason = 1
	// RejectFenced: another incarnation is registered.
	RejectFenced RejectReason = 2
	// RejectReplay: a UDP beat whose sequence number is not greater than
	// the instance's LastUDPSeq.
	RejectReplay RejectReason = 3
)

// String returns "UNKNOWN", "FENCED", "REPLAY" or "RejectReason(n)".
func (r RejectReason) String() string {
	switch r {
	case RejectUnknown:
		return "UNKNOWN"
	case RejectFenced:
		return "FENCED"
	case RejectReplay:
		return "REPLAY"
	}
	return fmt.Sprintf("RejectReason(%d)", uint8(r))
}

// BeatRejection is one beat of a batch that was not applied.
type BeatRejection struct {
	Service     string
	ID          string
	Incarnation uint64
	Reason      RejectReason
	// Current is the registered incarnation, for RejectFenced.
	Current uint64
	// UDPSeq is the beat's udp_seq (0 for a beat that did not come over
	// UDP), which tells apart two UDP beats of one instance in a batch.
	UDPSeq uint64
}

// BeatResult is the Apply response to a BeatBatch.
type BeatResult struct {
	Index uint64
	// Rejected lists the beats not applied, in command order.
	Rejected []BeatRejection
}

// ConditionalResult is the Apply response to MarkSuspect and Expire.
type ConditionalResult struct {
	Index   uint64
	Applied int
	Skipped int
}

// BeatSecretResult is the Apply response to BeatSecretSet.
type BeatSecretResult struct {
	Index uint64
	// Set is false when the cluster had a beat secret already (or the
	// command's was empty): the command changed nothing.
	Set bool
}

// NodeMetaResult is the Apply response to NodeMeta.
type NodeMetaResult struct {
	Index uint64
}

// Errors returned by this package. Domain errors are Apply responses, wrapped
// with detail; compare them with errors.Is.
var (
	// ErrNotFound: the instance is not registered (Deregister).
	ErrNotFound = errors.New("instance not found")
	// ErrFenced: a Register with a lower incarnation than the stored one, or
	// a Deregister naming an incarnation other than the stored one.
	ErrFenced = errors.New("incarnation fenced")
	// ErrCompacted: EventsAfter was asked for events that are no longer kept;
	// the watcher must reset from a full read.
	ErrCompacted = errors.New("event history compacted")
	// ErrACLBootstrapped: ACLBootstrap after the cluster was bootstrapped.
	ErrACLBootstrapped = errors.New("ACL already bootstrapped")
	// ErrACLNotFound: the ACL policy or token is not there.
	ErrACLNotFound = errors.New("ACL policy or token not found")
	// ErrACLConflict: a token's secret hash is another token's.
	ErrACLConflict = errors.New("ACL token conflict")
	// ErrEmptyWrite: a write of a WriteBatch names neither a registration
	// nor a deregistration. Only that write fails.
	ErrEmptyWrite = errors.New("write names neither a registration nor a deregistration")
	// ErrUndecodable: Decode could not parse a log entry.
	ErrUndecodable = errors.New("undecodable log entry")
	// ErrBadSnapshot: PrepareRestore could not decode a backup.
	ErrBadSnapshot = errors.New("invalid snapshot")
	// ErrLeadershipLost: a proposal was refused, or its outcome is unknown,
	// because this node does not lead (any more): Raft answered that it is
	// not the leader, lost leadership before the entry committed, is
	// transferring leadership, or is shutting down. The node's Proposer wraps
	// Raft's error in it and keeps Raft's error in the chain. Retrying on the
	// leader is safe: every command is idempotent. The expiry checker stops
	// quietly on it; rpc maps it to UNAVAILABLE.
	ErrLeadershipLost = errors.New("leadership lost")
)
