package rpc

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

func unixTime(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

// toAPIInstance converts a stored instance to the API form. The metadata
// map is shared: the fsm never mutates a stored map.
func toAPIInstance(in *fsm.Instance) *registryv1.Instance {
	return &registryv1.Instance{
		Service:       in.Service,
		Id:            in.ID,
		Address:       in.Address,
		Metadata:      in.Metadata,
		Incarnation:   in.Incarnation,
		BeatInterval:  durationpb.New(in.BeatInterval),
		SuspectAfter:  durationpb.New(in.SuspectAfter),
		Ttl:           durationpb.New(in.TTL),
		State:         registryv1.InstanceState(in.State),
		CreateIndex:   in.CreateIndex,
		ModifyIndex:   in.ModifyIndex,
		LastBeatIndex: in.LastBeatIndex,
		RegisteredAt:  unixTime(in.RegisteredAt),
		LastBeatAt:    unixTime(in.LastBeatAt),
	}
}

func toAPIInstances(ins []fsm.Instance, includeSuspect bool) []*registryv1.Instance {
	out := make([]*registryv1.Instance, 0, len(ins))
	for i := range ins {
		if !includeSuspect && ins[i].State != fsm.StateHealthy {
			continue
		}
		out = append(out, toAPIInstance(&ins[i]))
	}
	return out
}

func toAPIEvent(ev *fsm.Event) *registryv1.Event {
	out := &registryv1.Event{
		Type:     registryv1.EventType(ev.Type),
		Index:    ev.Index,
		Instance: toAPIInstance(&ev.Instance),
		At:       unixTime(ev.At),
	}
	switch ev.Type {
	case fsm.EventSuspect, fsm.EventReacquired, fsm.EventExpired:
		out.SinceLastBeat = durationpb.New(ev.SinceLastBeat)
		out.LastBeatAt = unixTime(ev.LastBeatAt)
	}
	return out
}
