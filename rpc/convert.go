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

// toAPIStatus converts a node's Status to the API form.
func toAPIStatus(st Status) *registryv1.StatusResponse {
	resp := &registryv1.StatusResponse{
		NodeId:                 st.NodeID,
		Role:                   st.Role,
		Term:                   st.Term,
		LeaderId:               st.LeaderID,
		LeaderGrpcAddress:      st.LeaderGRPCAddress,
		LeaderHttpAddress:      st.LeaderHTTPAddress,
		AppliedIndex:           st.AppliedIndex,
		CommitIndex:            st.CommitIndex,
		LastLogIndex:           st.LastLogIndex,
		CheckerRunning:         st.CheckerRunning,
		ExpiryGuardEngaged:     st.ExpiryGuardEngaged,
		ExpiriesHeld:           uint32(st.ExpiriesHeld),
		ExpiryGuardReleased:    st.ExpiryGuardReleased,
		FailoverFenceRemaining: durationpb.New(st.FailoverFenceRemaining),
	}
	if st.ClockSkewKnown {
		resp.ClockSkew = durationpb.New(st.ClockSkew)
	}
	if st.LastContactKnown {
		resp.LastContact = durationpb.New(st.LastContact)
	}
	for _, m := range st.Members {
		resp.Members = append(resp.Members, &registryv1.Member{
			Id: m.ID, RaftAddress: m.RaftAddress, GrpcAddress: m.GRPCAddress, HttpAddress: m.HTTPAddress,
			Voter: m.Voter, Leader: m.Leader, Role: m.Role(),
		})
	}
	return resp
}
