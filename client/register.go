package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

// RegistrationEventType says what happened to a registration, from the
// instance's side.
type RegistrationEventType int

const (
	// Registered: the first registration was acknowledged.
	Registered RegistrationEventType = 1
	// Lost: no beat was acknowledged for suspect_after; the registry is
	// about to mark the instance SUSPECT (or already has).
	Lost RegistrationEventType = 2
	// Reacquired: a beat was acknowledged again after Lost.
	Reacquired RegistrationEventType = 3
	// Reregistered: the registry had removed the instance (it expired, or
	// the cluster was restored from a backup); the client registered it
	// again with a higher incarnation.
	Reregistered RegistrationEventType = 4
	// Deregistered: the registration ended, by Deregister, Close, or
	// because another process registered the same id with a higher
	// incarnation. The channel closes after it.
	Deregistered RegistrationEventType = 5
)

func (t RegistrationEventType) String() string {
	switch t {
	case Registered:
		return "registered"
	case Lost:
		return "lost"
	case Reacquired:
		return "reacquired"
	case Reregistered:
		return "reregistered"
	case Deregistered:
		return "deregistered"
	}
	return "unknown"
}

// RegistrationEvent is one change of a registration.
type RegistrationEvent struct {
	Type        RegistrationEventType
	Incarnation uint64
	At          time.Time
	// Reason says why, for Deregistered and Reregistered.
	Reason string
}

// Registration is one instance this Client registered and keeps alive.
type Registration struct {
	c    *Client
	spec *registryv1.Instance // normalized; its incarnation is the beater's

	mu     sync.Mutex
	events chan RegistrationEvent
	ended  bool
}

// Register registers inst and keeps it alive with beats on the client's
// beat stream until Deregister or Close. It returns once the registration
// is committed. Bad input fails at once, naming the field and the limit.
func (c *Client) Register(ctx context.Context, inst Instance, opts ...RegisterOption) (*Registration, error) {
	o := registerOptions{events: 16}
	for _, opt := range opts {
		opt(&o)
	}
	if o.incarnation == 0 {
		o.incarnation = uint64(time.Now().UnixMilli())
	}
	req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service:     inst.Service,
		Id:          inst.ID,
		Address:     inst.Address,
		Metadata:    inst.Metadata,
		Incarnation: o.incarnation,
	}}
	if o.interval != 0 {
		req.Instance.BeatInterval = durationpb.New(o.interval)
	}
	if o.suspectAfter != 0 {
		req.Instance.SuspectAfter = durationpb.New(o.suspectAfter)
	}
	if o.ttl != 0 {
		req.Instance.Ttl = durationpb.New(o.ttl)
	}
	spec, err := validate.NormalizeRegister(req)
	if err != nil {
		return nil, fmt.Errorf("client: register: %w", err)
	}
	if err := c.register(ctx, spec); err != nil {
		return nil, err
	}
	r := &Registration{c: c, spec: spec, events: make(chan RegistrationEvent, max(o.events, 1))}
	r.emit(Registered, spec.Incarnation, "")
	c.beats.add(r)
	return r, nil
}

// register sends one registration, failing over between nodes.
func (c *Client) register(ctx context.Context, spec *registryv1.Instance) error {
	req := &registryv1.RegisterRequest{Instance: spec}
	return c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewRegistryClient(cc).Register(ctx, req)
		if err == nil {
			c.wrote(spec.Service, resp.Index)
		}
		return err
	})
}

// Events returns the registration's events. The channel is buffered; when
// it is full, new events are dropped. It closes after Deregistered.
func (r *Registration) Events() <-chan RegistrationEvent { return r.events }

// Instance returns the instance as this client registered it.
func (r *Registration) Instance() Instance {
	r.c.beats.mu.Lock()
	defer r.c.beats.mu.Unlock()
	return fromAPI(r.spec)
}

// Deregister stops beating and removes the instance from the registry. An
// instance the registry no longer holds is not an error.
func (r *Registration) Deregister(ctx context.Context) error {
	inc, ok := r.c.beats.remove(r)
	if !ok {
		return nil // already ended
	}
	req := &registryv1.DeregisterRequest{Service: r.spec.Service, Id: r.spec.Id, Incarnation: inc}
	err := r.c.call(ctx, true, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewRegistryClient(cc).Deregister(ctx, req)
		if err == nil {
			r.c.wrote(req.Service, resp.Index)
		}
		return err
	})
	if c := status.Code(err); c == codes.NotFound || c == codes.FailedPrecondition {
		err = nil // gone already, or superseded by another incarnation
	}
	r.end(inc, "deregistered")
	return err
}

// emit sends an event without blocking; a full channel drops it.
func (r *Registration) emit(t RegistrationEventType, inc uint64, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return
	}
	select {
	case r.events <- RegistrationEvent{Type: t, Incarnation: inc, At: time.Now(), Reason: reason}:
	default:
		r.c.log.Warn("registration event dropped: the application does not read Events", "service", r.spec.Service, "instance_id", r.spec.Id, "event", t.String())
	}
}

// end emits Deregistered and closes the channel.
func (r *Registration) end(inc uint64, reason string) {
	r.emit(Deregistered, inc, reason)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ended {
		r.ended = true
		close(r.events)
	}
}

// withIncarnation returns a copy of the spec at another incarnation.
func (r *Registration) withIncarnation(inc uint64) *registryv1.Instance {
	spec := proto.Clone(r.spec).(*registryv1.Instance)
	spec.Incarnation = inc
	return spec
}
