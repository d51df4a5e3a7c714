package rpc

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/fsm"
)

// The fsm, the public API and the client each declare the instance states,
// the event types and the beat rejection reasons, and convert between them
// by number. These tests pin the numbers: a drift in any one of them fails.

func TestMirroredEnumsHaveTheSameNumbers(t *testing.T) {
	tests := []struct {
		name            string
		fsm, api, cl    int
		hasClientMirror bool
	}{
		{"HEALTHY", int(fsm.StateHealthy), int(registryv1.InstanceState_INSTANCE_STATE_HEALTHY), int(client.Healthy), true},
		{"SUSPECT", int(fsm.StateSuspect), int(registryv1.InstanceState_INSTANCE_STATE_SUSPECT), int(client.Suspect), true},

		{"REGISTERED", int(fsm.EventRegistered), int(registryv1.EventType_EVENT_TYPE_REGISTERED), int(client.EventRegistered), true},
		{"UPDATED", int(fsm.EventUpdated), int(registryv1.EventType_EVENT_TYPE_UPDATED), int(client.EventUpdated), true},
		{"DEREGISTERED", int(fsm.EventDeregistered), int(registryv1.EventType_EVENT_TYPE_DEREGISTERED), int(client.EventDeregistered), true},
		{"SUSPECT event", int(fsm.EventSuspect), int(registryv1.EventType_EVENT_TYPE_SUSPECT), int(client.EventSuspect), true},
		{"REACQUIRED", int(fsm.EventReacquired), int(registryv1.EventType_EVENT_TYPE_REACQUIRED), int(client.EventReacquired), true},
		{"EXPIRED", int(fsm.EventExpired), int(registryv1.EventType_EVENT_TYPE_EXPIRED), int(client.EventExpired), true},

		// The client reads registryv1.BeatRejectReason itself: no mirror.
		{"UNKNOWN", int(fsm.RejectUnknown), int(registryv1.BeatRejectReason_BEAT_REJECT_REASON_UNKNOWN), 0, false},
		{"FENCED", int(fsm.RejectFenced), int(registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED), 0, false},
	}
	for _, tt := range tests {
		if tt.fsm != tt.api {
			t.Errorf("%s: fsm %d, registryv1 %d", tt.name, tt.fsm, tt.api)
		}
		if tt.hasClientMirror && tt.cl != tt.api {
			t.Errorf("%s: client %d, registryv1 %d", tt.name, tt.cl, tt.api)
		}
	}
}

// TestEveryAPIEnumValueIsMirrored walks the API enums' values, so that a value
// added to the proto without its mirrors, or a mirror renumbered, fails: the
// mirror of each number must have the proto value's name.
func TestEveryAPIEnumValueIsMirrored(t *testing.T) {
	tests := []struct {
		enum   protoreflect.EnumDescriptor
		prefix string
		fsm    func(n int) string
		client func(n int) string // nil: the client has no mirror
	}{
		{
			registryv1.InstanceState(0).Descriptor(), "INSTANCE_STATE_",
			func(n int) string { return fsm.InstanceState(n).String() },
			func(n int) string { return client.State(n).String() },
		},
		{
			registryv1.EventType(0).Descriptor(), "EVENT_TYPE_",
			func(n int) string { return fsm.EventType(n).String() },
			func(n int) string { return client.EventType(n).String() },
		},
		{
			registryv1.BeatRejectReason(0).Descriptor(), "BEAT_REJECT_REASON_",
			func(n int) string { return fsm.RejectReason(n).String() },
			nil,
		},
	}
	for _, tt := range tests {
		values := tt.enum.Values()
		for i := range values.Len() {
			v := values.Get(i)
			n := int(v.Number())
			if n == 0 {
				continue // UNSPECIFIED: never stored, never sent
			}
			want := strings.TrimPrefix(string(v.Name()), tt.prefix)
			if got := tt.fsm(n); got != want {
				t.Errorf("%s = %d: the fsm's %d is %q, want %q", v.Name(), n, n, got, want)
			}
			if tt.client == nil {
				continue
			}
			if got := tt.client(n); got != strings.ToLower(want) {
				t.Errorf("%s = %d: the client's %d is %q, want %q", v.Name(), n, n, got, strings.ToLower(want))
			}
		}
	}
}
