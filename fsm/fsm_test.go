package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// Command builders. Times are arbitrary Unix nanoseconds.

func register(svc, id string, inc uint64, now int64) *fsmpb.Register {
	return &fsmpb.Register{
		Service:        svc,
		Id:             id,
		Address:        "10.0.0.1:8080",
		Metadata:       map[string]string{"zone": "a", "version": "1.2"},
		Incarnation:    inc,
		BeatIntervalNs: int64(time.Second),
		SuspectAfterNs: int64(3 * time.Second),
		TtlNs:          int64(10 * time.Second),
		NowUnixNs:      now,
	}
}

func deregister(svc, id string, inc uint64, now int64) *fsmpb.Deregister {
	return &fsmpb.Deregister{Service: svc, Id: id, Incarnation: inc, NowUnixNs: now}
}

func beat(svc, id string, inc uint64) *fsmpb.Beat {
	return &fsmpb.Beat{Service: svc, Id: id, Incarnation: inc}
}

func beats(now int64, b ...*fsmpb.Beat) *fsmpb.BeatBatch {
	return &fsmpb.BeatBatch{Beats: b, NowUnixNs: now}
}

func cond(svc, id string, inc, lastBeat uint64) *fsmpb.Condition {
	return &fsmpb.Condition{Service: svc, Id: id, Incarnation: inc, LastBeatIndex: lastBeat}
}

func suspect(now int64, c ...*fsmpb.Condition) *fsmpb.MarkSuspect {
	return &fsmpb.MarkSuspect{Entries: c, NowUnixNs: now}
}

func expire(now int64, c ...*fsmpb.Condition) *fsmpb.Expire {
	return &fsmpb.Expire{Entries: c, NowUnixNs: now}
}

func nodeMeta(id, grpcAddr, httpAddr string) *fsmpb.NodeMeta {
	return &fsmpb.NodeMeta{NodeId: id, GrpcAddress: grpcAddr, HttpAddress: httpAddr}
}

// registered is the instance that register(svc, id, inc, now) creates at index.
func registered(svc, id string, inc, index uint64, now int64) fsm.Instance {
	return fsm.Instance{
		Service:       svc,
		ID:            id,
		Address:       "10.0.0.1:8080",
		Metadata:      map[string]string{"zone": "a", "version": "1.2"},
		Incarnation:   inc,
		BeatInterval:  time.Second,
		SuspectAfter:  3 * time.Second,
		TTL:           10 * time.Second,
		State:         fsm.StateHealthy,
		CreateIndex:   index,
		ModifyIndex:   index,
		LastBeatIndex: index,
		RegisteredAt:  now,
		LastBeatAt:    now,
	}
}

// with returns in changed by fn.
func with(in fsm.Instance, fn func(*fsm.Instance)) fsm.Instance {
	fn(&in)
	return in
}

// eventsAfter returns every kept event with an index above after.
func eventsAfter(t testing.TB, f *fsm.FSM, after uint64) []fsm.Event {
	t.Helper()
	events, _, err := f.EventsAfter("", after, 0)
	if err != nil {
		t.Fatalf("EventsAfter(%d): %v", after, err)
	}
	return events
}

func TestApply(t *testing.T) {
	const (
		svc = "orders"
		id  = "orders-1"
	)
	// Setup commands are applied at indexes 1..len(setup) with now = index*100;
	// the command under test at index len(setup)+1.
	tests := []struct {
		name    string
		setup   []proto.Message
		cmd     proto.Message
		want    any   // the response, unless wantErr
		wantErr error // errors.Is
		events  []fsm.Event
		state   []fsm.Instance
	}{
		{
			name: "register creates",
			cmd:  register(svc, id, 1, 100),
			want: &fsm.RegisterResult{Index: 1, Instance: registered(svc, id, 1, 1, 100), Created: true},
			events: []fsm.Event{
				{Type: fsm.EventRegistered, Index: 1, Instance: registered(svc, id, 1, 1, 100), At: 100},
			},
			state: []fsm.Instance{registered(svc, id, 1, 1, 100)},
		},
		{
			name:    "register with a lower incarnation is fenced",
			setup:   []proto.Message{register(svc, id, 7, 100)},
			cmd:     register(svc, id, 5, 200),
			wantErr: fsm.ErrFenced,
			state:   []fsm.Instance{registered(svc, id, 7, 1, 100)},
		},
		{
			name:  "register same incarnation unchanged is a beat",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd:   register(svc, id, 1, 200),
			want: &fsm.RegisterResult{Index: 2, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.LastBeatIndex, in.LastBeatAt = 2, 200
			})},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.LastBeatIndex, in.LastBeatAt = 2, 200
			})},
		},
		{
			name:  "register same incarnation new address updates",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd: func() proto.Message {
				c := register(svc, id, 1, 200)
				c.Address = "10.0.0.2:8080"
				return c
			}(),
			want: &fsm.RegisterResult{Index: 2, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.2:8080", 2, 2, 200
			})},
			events: []fsm.Event{{Type: fsm.EventUpdated, Index: 2, At: 200, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.2:8080", 2, 2, 200
			})}},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.2:8080", 2, 2, 200
			})},
		},
		{
			name:  "register same incarnation new metadata updates",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd: func() proto.Message {
				c := register(svc, id, 1, 200)
				c.Metadata = map[string]string{"zone": "b"}
				return c
			}(),
			want: &fsm.RegisterResult{Index: 2, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Metadata, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = map[string]string{"zone": "b"}, 2, 2, 200
			})},
			events: []fsm.Event{{Type: fsm.EventUpdated, Index: 2, At: 200, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Metadata, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = map[string]string{"zone": "b"}, 2, 2, 200
			})}},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Metadata, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = map[string]string{"zone": "b"}, 2, 2, 200
			})},
		},
		{
			name:  "register same incarnation new ttl updates",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd: func() proto.Message {
				c := register(svc, id, 1, 200)
				c.TtlNs = int64(time.Minute)
				return c
			}(),
			want: &fsm.RegisterResult{Index: 2, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.TTL, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = time.Minute, 2, 2, 200
			})},
			events: []fsm.Event{{Type: fsm.EventUpdated, Index: 2, At: 200, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.TTL, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = time.Minute, 2, 2, 200
			})}},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.TTL, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = time.Minute, 2, 2, 200
			})},
		},
		{
			name:  "register same incarnation on a suspect reacquires",
			setup: []proto.Message{register(svc, id, 1, 100), suspect(150, cond(svc, id, 1, 1))},
			cmd:   register(svc, id, 1, 300),
			want: &fsm.RegisterResult{Index: 3, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = 3, 3, 300
			})},
			events: []fsm.Event{{
				Type: fsm.EventReacquired, Index: 3, At: 300, SinceLastBeat: 200, LastBeatAt: 100,
				Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
					in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = 3, 3, 300
				}),
			}},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = 3, 3, 300
			})},
		},
		{
			name:  "register same incarnation changed on a suspect updates",
			setup: []proto.Message{register(svc, id, 1, 100), suspect(150, cond(svc, id, 1, 1))},
			cmd: func() proto.Message {
				c := register(svc, id, 1, 300)
				c.Address = "10.0.0.3:8080"
				return c
			}(),
			want: &fsm.RegisterResult{Index: 3, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.3:8080", 3, 3, 300
			})},
			events: []fsm.Event{{Type: fsm.EventUpdated, Index: 3, At: 300, Instance: with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.3:8080", 3, 3, 300
			})}},
			state: []fsm.Instance{with(registered(svc, id, 1, 1, 100), func(in *fsm.Instance) {
				in.Address, in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = "10.0.0.3:8080", 3, 3, 300
			})},
		},
		{
			name:  "register higher incarnation supersedes",
			setup: []proto.Message{register(svc, id, 1, 100), suspect(150, cond(svc, id, 1, 1))},
			cmd:   register(svc, id, 2, 300),
			want:  &fsm.RegisterResult{Index: 3, Instance: registered(svc, id, 2, 3, 300)},
			events: []fsm.Event{
				{Type: fsm.EventUpdated, Index: 3, Instance: registered(svc, id, 2, 3, 300), At: 300},
			},
			state: []fsm.Instance{registered(svc, id, 2, 3, 300)},
		},
		{
			name: "register without metadata stores nil",
			cmd:  &fsmpb.Register{Service: svc, Id: id, Metadata: map[string]string{}, NowUnixNs: 5},
			want: &fsm.RegisterResult{Index: 1, Created: true, Instance: fsm.Instance{
				Service: svc, ID: id, State: fsm.StateHealthy, CreateIndex: 1, ModifyIndex: 1, LastBeatIndex: 1,
				RegisteredAt: 5, LastBeatAt: 5,
			}},
			events: []fsm.Event{{Type: fsm.EventRegistered, Index: 1, At: 5, Instance: fsm.Instance{
				Service: svc, ID: id, State: fsm.StateHealthy, CreateIndex: 1, ModifyIndex: 1, LastBeatIndex: 1,
				RegisteredAt: 5, LastBeatAt: 5,
			}}},
			state: []fsm.Instance{{
				Service: svc, ID: id, State: fsm.StateHealthy, CreateIndex: 1, ModifyIndex: 1, LastBeatIndex: 1,
				RegisteredAt: 5, LastBeatAt: 5,
			}},
		},
		{
			name:    "deregister absent",
			setup:   []proto.Message{register(svc, "other", 1, 100)},
			cmd:     deregister(svc, id, 0, 200),
			wantErr: fsm.ErrNotFound,
			state:   []fsm.Instance{registered(svc, "other", 1, 1, 100)},
		},
		{
			name:    "deregister another incarnation is fenced",
			setup:   []proto.Message{register(svc, id, 3, 100)},
			cmd:     deregister(svc, id, 2, 200),
			wantErr: fsm.ErrFenced,
			state:   []fsm.Instance{registered(svc, id, 3, 1, 100)},
		},
		{
			name:   "deregister any incarnation",
			setup:  []proto.Message{register(svc, id, 3, 100), suspect(150, cond(svc, id, 3, 1))},
			cmd:    deregister(svc, id, 0, 300),
			want:   &fsm.DeregisterResult{Index: 3, Instance: with(registered(svc, id, 3, 1, 100), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 2 })},
			events: []fsm.Event{{Type: fsm.EventDeregistered, Index: 3, At: 300, Instance: with(registered(svc, id, 3, 1, 100), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 2 })}},
		},
		{
			name:   "deregister the stored incarnation",
			setup:  []proto.Message{register(svc, id, 3, 100), register(svc, "keep", 1, 200)},
			cmd:    deregister(svc, id, 3, 300),
			want:   &fsm.DeregisterResult{Index: 3, Instance: registered(svc, id, 3, 1, 100)},
			events: []fsm.Event{{Type: fsm.EventDeregistered, Index: 3, At: 300, Instance: registered(svc, id, 3, 1, 100)}},
			state:  []fsm.Instance{registered(svc, "keep", 1, 2, 200)},
		},
		{
			name: "beat batch",
			setup: []proto.Message{
				register(svc, "a", 1, 100),
				register(svc, "b", 2, 200),
				register(svc, "c", 1, 300),
				suspect(350, cond(svc, "c", 1, 3)),
			},
			cmd: beats(500,
				beat(svc, "a", 1),
				beat(svc, "gone", 1),
				beat(svc, "b", 1),
				beat(svc, "c", 1),
				beat(svc, "c", 1), // a duplicate renews again, without an event
			),
			want: &fsm.BeatResult{Index: 5, Rejected: []fsm.BeatRejection{
				{Service: svc, ID: "gone", Incarnation: 1, Reason: fsm.RejectUnknown},
				{Service: svc, ID: "b", Incarnation: 1, Reason: fsm.RejectFenced, Current: 2},
			}},
			events: []fsm.Event{{
				Type: fsm.EventReacquired, Index: 5, At: 500, SinceLastBeat: 200, LastBeatAt: 300,
				Instance: with(registered(svc, "c", 1, 3, 300), func(in *fsm.Instance) {
					in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = 5, 5, 500
				}),
			}},
			state: []fsm.Instance{
				with(registered(svc, "a", 1, 1, 100), func(in *fsm.Instance) { in.LastBeatIndex, in.LastBeatAt = 5, 500 }),
				registered(svc, "b", 2, 2, 200),
				with(registered(svc, "c", 1, 3, 300), func(in *fsm.Instance) {
					in.ModifyIndex, in.LastBeatIndex, in.LastBeatAt = 5, 5, 500
				}),
			},
		},
		{
			// Two batches under way commit out of their stamps' order.
			name:  "beat batch stamped before the last beat keeps the later time",
			setup: []proto.Message{register(svc, "a", 1, 100), beats(500, beat(svc, "a", 1))},
			cmd:   beats(400, beat(svc, "a", 1)),
			want:  &fsm.BeatResult{Index: 3},
			state: []fsm.Instance{
				with(registered(svc, "a", 1, 1, 100), func(in *fsm.Instance) { in.LastBeatIndex, in.LastBeatAt = 3, 500 }),
			},
		},
		{
			name:  "empty beat batch",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd:   beats(200),
			want:  &fsm.BeatResult{Index: 2},
			state: []fsm.Instance{registered(svc, id, 1, 1, 100)},
		},
		{
			name: "mark suspect",
			setup: []proto.Message{
				register(svc, "a", 1, 100),
				register(svc, "b", 2, 200),
				register(svc, "c", 1, 300),
				beats(400, beat(svc, "c", 1)),
				register(svc, "d", 1, 500),
				suspect(600, cond(svc, "d", 1, 5)),
			},
			cmd: suspect(1000,
				cond(svc, "a", 1, 1),    // applies
				cond(svc, "a", 1, 1),    // duplicate: already SUSPECT
				cond(svc, "gone", 1, 1), // absent
				cond(svc, "b", 1, 2),    // other incarnation
				cond(svc, "c", 1, 3),    // beat since
				cond(svc, "d", 1, 5),    // already SUSPECT
			),
			want: &fsm.ConditionalResult{Index: 7, Applied: 1, Skipped: 5},
			events: []fsm.Event{{
				Type: fsm.EventSuspect, Index: 7, At: 1000, SinceLastBeat: 900, LastBeatAt: 100,
				Instance: with(registered(svc, "a", 1, 1, 100), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 7 }),
			}},
			state: []fsm.Instance{
				with(registered(svc, "a", 1, 1, 100), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 7 }),
				registered(svc, "b", 2, 2, 200),
				with(registered(svc, "c", 1, 3, 300), func(in *fsm.Instance) { in.LastBeatIndex, in.LastBeatAt = 4, 400 }),
				with(registered(svc, "d", 1, 5, 500), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 6 }),
			},
		},
		{
			name: "expire",
			setup: []proto.Message{
				register(svc, "a", 1, 100),
				register(svc, "b", 2, 200),
				register(svc, "c", 1, 300),
				beats(400, beat(svc, "c", 1)),
				register(svc, "d", 1, 500),
				suspect(600, cond(svc, "d", 1, 5)),
			},
			cmd: expire(1000,
				cond(svc, "a", 1, 1),    // applies
				cond(svc, "a", 1, 1),    // duplicate: gone by now
				cond(svc, "gone", 1, 1), // absent
				cond(svc, "b", 1, 2),    // other incarnation
				cond(svc, "c", 1, 3),    // beat since
				cond(svc, "d", 1, 5),    // applies to a SUSPECT too
			),
			want: &fsm.ConditionalResult{Index: 7, Applied: 2, Skipped: 4},
			events: []fsm.Event{
				{
					Type: fsm.EventExpired, Index: 7, At: 1000, SinceLastBeat: 900, LastBeatAt: 100,
					Instance: registered(svc, "a", 1, 1, 100),
				},
				{
					Type: fsm.EventExpired, Index: 7, At: 1000, SinceLastBeat: 500, LastBeatAt: 500,
					Instance: with(registered(svc, "d", 1, 5, 500), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 6 }),
				},
			},
			state: []fsm.Instance{
				registered(svc, "b", 2, 2, 200),
				with(registered(svc, "c", 1, 3, 300), func(in *fsm.Instance) { in.LastBeatIndex, in.LastBeatAt = 4, 400 }),
			},
		},
		{
			name:  "node meta",
			setup: []proto.Message{register(svc, id, 1, 100)},
			cmd:   nodeMeta("n1", "10.0.0.9:9000", ""),
			want:  &fsm.NodeMetaResult{Index: 2},
			state: []fsm.Instance{registered(svc, id, 1, 1, 100)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fsmtest.New(t, fsm.DefaultConfig())
			for i, msg := range tt.setup {
				index := uint64(i + 1)
				if err, ok := fsmtest.Apply(t, f, index, msg).(error); ok {
					t.Fatalf("setup %d: %v", index, err)
				}
			}
			index := uint64(len(tt.setup) + 1)
			got := fsmtest.Apply(t, f, index, tt.cmd)
			if tt.wantErr != nil {
				err, _ := got.(error)
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Apply = %v, want an error wrapping %v", got, tt.wantErr)
				}
			} else if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Apply response (-want +got):\n%s", diff)
			}
			if got := f.AppliedIndex(); got != index {
				t.Errorf("AppliedIndex() = %d, want %d", got, index)
			}
			if diff := cmp.Diff(tt.events, eventsAfter(t, f, index-1)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			gotState, stateIndex := f.Instances()
			if diff := cmp.Diff(tt.state, gotState); diff != "" {
				t.Errorf("Instances() (-want +got):\n%s", diff)
			}
			if stateIndex != index {
				t.Errorf("Instances() index = %d, want %d", stateIndex, index)
			}
			fsmtest.SnapshotRestore(t, f)
		})
	}
}

func TestApplyErrorDetail(t *testing.T) {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, register("orders", "orders-1", 7, 100))
	err, _ := fsmtest.Apply(t, f, 2, register("orders", "orders-1", 5, 200)).(error)
	if want := "incarnation fenced: orders/orders-1 is at incarnation 7, got 5"; err == nil || err.Error() != want {
		t.Errorf("fenced error = %v, want %q", err, want)
	}
	err, _ = fsmtest.Apply(t, f, 3, deregister("orders", "nope", 0, 300)).(error)
	if want := "instance not found: orders/nope"; err == nil || err.Error() != want {
		t.Errorf("not found error = %v, want %q", err, want)
	}
}

func TestRegisterCopiesMetadata(t *testing.T) {
	cmd := register("orders", "orders-1", 1, 100)
	st := fsm.NewState()
	if _, _, err := st.Register(1, cmd); err != nil {
		t.Fatal(err)
	}
	cmd.Metadata["zone"] = "changed in command"
	in, _ := st.Get("orders", "orders-1")
	if got := in.Metadata["zone"]; got != "a" {
		t.Errorf("State aliases the command's metadata: zone = %q, want %q", got, "a")
	}
}

func mustEncode(t testing.TB, typ fsm.MessageType, msg proto.Message) []byte {
	t.Helper()
	b, err := fsm.Encode(typ, msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyNodeMeta(t *testing.T) {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, nodeMeta("n2", "10.0.0.2:9000", "10.0.0.2:8000"))
	fsmtest.Apply(t, f, 2, nodeMeta("n1", "10.0.0.1:9000", ""))
	fsmtest.Apply(t, f, 3, nodeMeta("n1", "", "10.0.0.1:8000"))
	want := []fsm.NodeMeta{
		{NodeID: "n1", HTTPAddress: "10.0.0.1:8000"},
		{NodeID: "n2", GRPCAddress: "10.0.0.2:9000", HTTPAddress: "10.0.0.2:8000"},
	}
	if diff := cmp.Diff(want, f.Nodes()); diff != "" {
		t.Errorf("Nodes() (-want +got):\n%s", diff)
	}
	fsmtest.SnapshotRestore(t, f)

	if diff := cmp.Diff(&fsm.NodeMetaResult{Index: 4}, fsmtest.Apply(t, f, 4, nodeMeta("n2", "", ""))); diff != "" {
		t.Errorf("delete response (-want +got):\n%s", diff)
	}
	fsmtest.Apply(t, f, 5, nodeMeta("absent", "", "")) // deleting an absent node is a no-op
	if _, ok := f.Node("n2"); ok {
		t.Error("Node(n2) found after deletion")
	}
	if got, ok := f.Node("n1"); !ok || got != want[0] {
		t.Errorf("Node(n1) = %v, %v, want %v, true", got, ok, want[0])
	}
	if got := eventsAfter(t, f, 0); len(got) != 0 {
		t.Errorf("node metadata emitted events: %v", got)
	}
}

// The checker proposes a conditional command based on what it saw; a beat or
// a re-registration that commits first must win.
func TestConditionalRace(t *testing.T) {
	const svc, id = "orders", "orders-1"
	type race struct {
		name string
		at5  proto.Message // what commits at index 5, after the checker saw index 3
	}
	races := []race{
		{"beat", beats(500, beat(svc, id, 1))},
		{"re-register", register(svc, id, 1, 500)},
	}
	checks := []struct {
		name string
		cmd  func(lastBeat uint64) proto.Message
	}{
		{"expire", func(lb uint64) proto.Message { return expire(600, cond(svc, id, 1, lb)) }},
		{"mark suspect", func(lb uint64) proto.Message { return suspect(600, cond(svc, id, 1, lb)) }},
	}
	for _, r := range races {
		for _, c := range checks {
			t.Run(r.name+"/"+c.name, func(t *testing.T) {
				setup := func() *fsm.FSM {
					f := fsmtest.New(t, fsm.DefaultConfig())
					fsmtest.Apply(t, f, 1, nodeMeta("n1", "a:1", "a:2"))
					fsmtest.Apply(t, f, 2, register("other", "x", 1, 200))
					fsmtest.Apply(t, f, 3, register(svc, id, 1, 300))
					fsmtest.Apply(t, f, 4, nodeMeta("n2", "b:1", "b:2"))
					fsmtest.Apply(t, f, 5, r.at5)
					return f
				}

				f := setup()
				before, _ := f.Instance(svc, id)
				got := fsmtest.Apply(t, f, 6, c.cmd(3))
				if diff := cmp.Diff(&fsm.ConditionalResult{Index: 6, Skipped: 1}, got); diff != "" {
					t.Errorf("stale condition (-want +got):\n%s", diff)
				}
				after, ok := f.Instance(svc, id)
				if !ok {
					t.Fatal("instance gone after a stale condition")
				}
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("instance changed by a stale condition (-before +after):\n%s", diff)
				}
				if after.LastBeatIndex != 5 || after.State != fsm.StateHealthy {
					t.Errorf("LastBeatIndex, State = %d, %v, want 5, HEALTHY", after.LastBeatIndex, after.State)
				}
				if got := eventsAfter(t, f, 5); len(got) != 0 {
					t.Errorf("stale condition emitted events: %v", got)
				}

				// Control: the condition naming the latest beat applies.
				f = setup()
				if diff := cmp.Diff(&fsm.ConditionalResult{Index: 6, Applied: 1}, fsmtest.Apply(t, f, 6, c.cmd(5))); diff != "" {
					t.Errorf("fresh condition (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestApplyUnknownType(t *testing.T) {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, register("orders", "orders-1", 1, 100))
	hash := f.Hash()
	changed := f.Changed()

	// A future optional command: skipped.
	got := f.Apply(fsmtest.Log(2, []byte{byte(fsm.IgnoreUnknownTypeFlag) | 42, 0x0a, 0x01, 'x'}))
	if got != nil {
		t.Errorf("Apply(unknown ignorable) = %v, want nil", got)
	}
	if f.AppliedIndex() != 2 {
		t.Errorf("AppliedIndex() = %d, want 2", f.AppliedIndex())
	}
	if !isClosed(changed) {
		t.Error("Changed() not closed by a skipped entry")
	}
	if f.Hash() == hash {
		t.Error("Hash() did not change with the applied index")
	}
	if n, _ := f.Instances(); len(n) != 1 {
		t.Errorf("skipped entry changed the state: %v", n)
	}

	// A known command marked ignorable is applied by nodes that know it.
	data := mustEncode(t, fsm.RegisterType|fsm.IgnoreUnknownTypeFlag, register("orders", "orders-2", 1, 300))
	if _, ok := f.Apply(fsmtest.Log(3, data)).(*fsm.RegisterResult); !ok {
		t.Error("known command with the ignore flag was not applied")
	}
}

func TestApplyPanicsOnUndecodable(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{42, 0x0a, 0x01, 'x'}},
		{"bad payload", []byte{byte(fsm.RegisterType), 0x0a, 0x05, 'x'}},
		{"bad utf-8", []byte{byte(fsm.DeregisterType), 0x0a, 0x01, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fsmtest.New(t, fsm.DefaultConfig())
			defer func() {
				r := recover()
				msg, _ := r.(string)
				if !strings.Contains(msg, "index 7") {
					t.Errorf("panic = %v, want a message naming index 7", r)
				}
				if f.AppliedIndex() != 0 {
					t.Errorf("AppliedIndex() = %d after a failed entry, want 0", f.AppliedIndex())
				}
			}()
			f.Apply(fsmtest.Log(7, tt.data))
			t.Error("Apply did not panic")
		})
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestChanged(t *testing.T) {
	f := fsmtest.New(t, fsm.DefaultConfig())
	ch := f.Changed()
	if isClosed(ch) {
		t.Fatal("Changed() closed before any Apply")
	}
	fsmtest.Apply(t, f, 1, register("orders", "orders-1", 1, 100))
	if !isClosed(ch) {
		t.Fatal("Changed() not closed by Apply")
	}
	ch = f.Changed()
	if isClosed(ch) {
		t.Fatal("the replacement Changed() channel is already closed")
	}
	// A domain error still advances the applied index.
	fsmtest.Apply(t, f, 2, deregister("orders", "nope", 0, 200))
	if !isClosed(ch) {
		t.Fatal("Changed() not closed by an Apply that returned an error")
	}
	ch = f.Changed()
	g := fsm.New(fsm.Config{})
	if err := g.Restore(io.NopCloser(bytes.NewReader(fsmtest.Persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if isClosed(ch) {
		t.Fatal("restoring another FSM closed this one's channel")
	}
	ch = g.Changed()
	if err := g.Restore(io.NopCloser(bytes.NewReader(fsmtest.Persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ch) {
		t.Fatal("Changed() not closed by Restore")
	}
}

func TestReads(t *testing.T) {
	f := fsmtest.New(t, fsm.DefaultConfig())
	fsmtest.Apply(t, f, 1, register("web", "w2", 1, 100))
	fsmtest.Apply(t, f, 2, register("web", "w1", 1, 200))
	fsmtest.Apply(t, f, 3, register("api", "a1", 1, 300))
	fsmtest.Apply(t, f, 4, register("db", "d1", 1, 400))
	fsmtest.Apply(t, f, 5, suspect(500, cond("web", "w2", 1, 1), cond("db", "d1", 1, 4)))
	fsmtest.Apply(t, f, 6, deregister("api", "a1", 0, 600))
	fsmtest.Apply(t, f, 7, nodeMeta("n1", "g", "h"))

	suspectW2 := with(registered("web", "w2", 1, 1, 100), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 5 })
	suspectD1 := with(registered("db", "d1", 1, 4, 400), func(in *fsm.Instance) { in.State, in.ModifyIndex = fsm.StateSuspect, 5 })
	w1 := registered("web", "w1", 1, 2, 200)

	got, index := f.GetService("web", false)
	if diff := cmp.Diff([]fsm.Instance{w1}, got); diff != "" || index != 7 {
		t.Errorf("GetService(web, false) index %d (-want +got):\n%s", index, diff)
	}
	got, _ = f.GetService("web", true)
	if diff := cmp.Diff([]fsm.Instance{w1, suspectW2}, got); diff != "" {
		t.Errorf("GetService(web, true) (-want +got):\n%s", diff)
	}
	if got, _ := f.GetService("api", true); got != nil {
		t.Errorf("GetService(api) = %v, want none", got)
	}

	sums, index := f.ListServices()
	wantSums := []fsm.ServiceSummary{{Service: "db", Suspect: 1}, {Service: "web", Healthy: 1, Suspect: 1}}
	if diff := cmp.Diff(wantSums, sums); diff != "" || index != 7 {
		t.Errorf("ListServices() index %d (-want +got):\n%s", index, diff)
	}

	all, index := f.Instances()
	if diff := cmp.Diff([]fsm.Instance{suspectD1, w1, suspectW2}, all); diff != "" || index != 7 {
		t.Errorf("Instances() index %d (-want +got):\n%s", index, diff)
	}
	reset, index := f.Reset("")
	if diff := cmp.Diff(all, reset); diff != "" || index != 7 {
		t.Errorf("Reset(\"\") index %d (-want +got):\n%s", index, diff)
	}
	reset, _ = f.Reset("web")
	if diff := cmp.Diff([]fsm.Instance{w1, suspectW2}, reset); diff != "" {
		t.Errorf("Reset(web) (-want +got):\n%s", diff)
	}

	// Returned values are copies.
	all[0].Address = "changed"
	if in, ok := f.Instance("db", "d1"); !ok || in.Address != suspectD1.Address {
		t.Errorf("Instance(db, d1) = %v, %v after changing a returned copy", in, ok)
	}
	if _, ok := f.Instance("api", "a1"); ok {
		t.Error("Instance(api, a1) found after deregistration")
	}
}
