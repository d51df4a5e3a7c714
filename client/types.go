package client

import (
	"maps"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// State is an instance's liveness verdict.
type State int

const (
	// Healthy instances beat in time.
	Healthy State = 1
	// Suspect instances missed their suspect_after.
	Suspect State = 2
)

func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Suspect:
		return "suspect"
	}
	return "unknown"
}

// Instance is one instance of a service. Service, ID, Address and Metadata
// are given at registration; the rest is set by the registry.
type Instance struct {
	Service  string
	ID       string
	Address  string
	Metadata map[string]string

	Incarnation  uint64
	State        State
	BeatInterval time.Duration
	SuspectAfter time.Duration
	TTL          time.Duration
	RegisteredAt time.Time
	LastBeat     time.Time
	// ModifyIndex is the Raft index of the last change.
	ModifyIndex uint64
}

func fromAPI(in *registryv1.Instance) Instance {
	return Instance{
		Service:      in.GetService(),
		ID:           in.GetId(),
		Address:      in.GetAddress(),
		Metadata:     maps.Clone(in.GetMetadata()),
		Incarnation:  in.GetIncarnation(),
		State:        State(in.GetState()),
		BeatInterval: in.GetBeatInterval().AsDuration(),
		SuspectAfter: in.GetSuspectAfter().AsDuration(),
		TTL:          in.GetTtl().AsDuration(),
		RegisteredAt: timeOf(in.GetRegisteredAt().AsTime(), in.GetRegisteredAt() != nil),
		LastBeat:     timeOf(in.GetLastBeatAt().AsTime(), in.GetLastBeatAt() != nil),
		ModifyIndex:  in.GetModifyIndex(),
	}
}

func timeOf(t time.Time, ok bool) time.Time {
	if !ok {
		return time.Time{}
	}
	return t
}

// EventType says what happened.
type EventType int

const (
	// EventRegistered: a new instance.
	EventRegistered EventType = 1
	// EventUpdated: an instance changed (address, metadata, timing, or a
	// new incarnation).
	EventUpdated EventType = 2
	// EventDeregistered: an instance was deregistered.
	EventDeregistered EventType = 3
	// EventSuspect: an instance missed its suspect_after.
	EventSuspect EventType = 4
	// EventReacquired: a SUSPECT instance beat again.
	EventReacquired EventType = 5
	// EventExpired: an instance missed its TTL and was removed.
	EventExpired EventType = 6
	// EventReset: the watch restarted from a full set (Instances): replace
	// whatever view you built from earlier events.
	EventReset EventType = 100
)

func (t EventType) String() string {
	switch t {
	case EventRegistered:
		return "registered"
	case EventUpdated:
		return "updated"
	case EventDeregistered:
		return "deregistered"
	case EventSuspect:
		return "suspect"
	case EventReacquired:
		return "reacquired"
	case EventExpired:
		return "expired"
	case EventReset:
		return "reset"
	}
	return "unknown"
}

// Event is one change seen by Watch.
type Event struct {
	Type EventType
	// Index is the Raft index of the change (of the reset's state, for
	// EventReset). Events arrive in index order.
	Index uint64
	// Instance is the instance after the change (before it, for
	// EventDeregistered and EventExpired). Empty for EventReset.
	Instance Instance
	// Instances is the whole set, SUSPECT ones included, for EventReset.
	Instances []Instance
	// SinceLastBeat is, for suspect, reacquired and expired, the time from
	// the instance's previous beat to the change.
	SinceLastBeat time.Duration
}

// isLive reports whether the event leaves the instance in the registry.
func (t EventType) isLive() bool {
	return t == EventRegistered || t == EventUpdated || t == EventSuspect || t == EventReacquired
}
