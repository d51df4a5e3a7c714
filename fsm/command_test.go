package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		typ fsm.MessageType
		msg proto.Message
	}{
		{fsm.RegisterType, register("orders", "orders-1", 3, 100)},
		{fsm.DeregisterType, deregister("orders", "orders-1", 3, 100)},
		{fsm.BeatBatchType, beats(100, beat("orders", "orders-1", 3), beat("web", "w", 1))},
		{fsm.MarkSuspectType, suspect(100, cond("orders", "orders-1", 3, 7))},
		{fsm.ExpireType, expire(100, cond("orders", "orders-1", 3, 7))},
		{fsm.NodeMetaType, nodeMeta("n1", "10.0.0.1:9000", "10.0.0.1:8000")},
		{fsm.WriteBatchType, writeBatch(register("orders", "orders-1", 3, 100), deregister("web", "w", 1, 100), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			if typ, ok := fsm.TypeOf(tt.msg); typ != tt.typ || !ok {
				t.Errorf("TypeOf = %v, %v; want %v, true", typ, ok, tt.typ)
			}
			data := mustEncode(t, tt.typ, tt.msg)
			if data[0] != byte(tt.typ) {
				t.Errorf("type byte = %d, want %d", data[0], tt.typ)
			}
			typ, msg, err := fsm.Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if typ != tt.typ {
				t.Errorf("Decode type = %v, want %v", typ, tt.typ)
			}
			if diff := cmp.Diff(tt.msg, msg, protocmp.Transform()); diff != "" {
				t.Errorf("Decode message (-want +got):\n%s", diff)
			}

			// With the ignore flag, a known type decodes as itself.
			flagged := append([]byte{byte(tt.typ | fsm.IgnoreUnknownTypeFlag)}, data[1:]...)
			typ, msg, err = fsm.Decode(flagged)
			if err != nil || typ != tt.typ || msg == nil {
				t.Errorf("Decode(flagged) = %v, %v, %v; want %v, a message, nil", typ, msg, err, tt.typ)
			}
		})
	}
}

func TestEncodeDeterministic(t *testing.T) {
	msg := register("orders", "orders-1", 1, 100)
	msg.Metadata = make(map[string]string)
	for i := range 50 {
		msg.Metadata[fmt.Sprintf("key-%02d", i)] = fmt.Sprint(i)
	}
	first := mustEncode(t, fsm.RegisterType, msg)
	for range 20 {
		if got := mustEncode(t, fsm.RegisterType, proto.Clone(msg)); !bytes.Equal(got, first) {
			t.Fatal("two encodings of the same command differ")
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  fsm.MessageType
		msg  proto.Message
	}{
		{"unknown type", 42, register("a", "b", 1, 1)},
		{"unknown ignorable type", fsm.IgnoreUnknownTypeFlag | 42, register("a", "b", 1, 1)},
		{"wrong message", fsm.DeregisterType, register("a", "b", 1, 1)},
		{"nil message", fsm.RegisterType, nil},
		{"header is not a command", fsm.RegisterType, &fsmpb.SnapshotHeader{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if data, err := fsm.Encode(tt.typ, tt.msg); err == nil {
				t.Errorf("Encode = %x, nil; want an error", data)
			}
		})
	}
}

func TestTypeOfNonCommands(t *testing.T) {
	for _, msg := range []proto.Message{nil, &fsmpb.SnapshotHeader{}, &fsmpb.Beat{}} {
		if typ, ok := fsm.TypeOf(msg); ok {
			t.Errorf("TypeOf(%T) = %v, true; want false", msg, typ)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"unknown type", []byte{42}},
		{"zero type", []byte{0, 0x0a, 0x00}},
		{"truncated field", []byte{byte(fsm.RegisterType), 0x0a, 0x05, 'o'}},
		{"bad varint", []byte{byte(fsm.BeatBatchType), 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"invalid utf-8", []byte{byte(fsm.NodeMetaType), 0x0a, 0x02, 0xc3, 0x28}},
		{"bad nested message", []byte{byte(fsm.ExpireType), 0x0a, 0x02, 0x0a, 0x07}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, msg, err := fsm.Decode(tt.data)
			if !errors.Is(err, fsm.ErrUndecodable) {
				t.Errorf("Decode = %v, %v, %v; want an error wrapping ErrUndecodable", typ, msg, err)
			}
		})
	}
}

func TestDecodeIgnorable(t *testing.T) {
	for _, data := range [][]byte{
		{byte(fsm.IgnoreUnknownTypeFlag)},
		{200, 0xff, 0xff}, // the payload of an unknown type is not parsed
	} {
		typ, msg, err := fsm.Decode(data)
		if err != nil || msg != nil || typ != fsm.MessageType(data[0]) {
			t.Errorf("Decode(%x) = %v, %v, %v; want %v, nil, nil", data, typ, msg, err, fsm.MessageType(data[0]))
		}
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got  fmt.Stringer
		want string
	}{
		{fsm.RegisterType, "Register"},
		{fsm.NodeMetaType, "NodeMeta"},
		{fsm.WriteBatchType, "WriteBatch"},
		{fsm.ExpireType | fsm.IgnoreUnknownTypeFlag, "Expire|IgnoreUnknown"},
		{fsm.MessageType(77), "MessageType(77)"},
		{fsm.StateHealthy, "HEALTHY"},
		{fsm.StateSuspect, "SUSPECT"},
		{fsm.InstanceState(0), "InstanceState(0)"},
		{fsm.EventRegistered, "REGISTERED"},
		{fsm.EventUpdated, "UPDATED"},
		{fsm.EventDeregistered, "DEREGISTERED"},
		{fsm.EventSuspect, "SUSPECT"},
		{fsm.EventReacquired, "REACQUIRED"},
		{fsm.EventExpired, "EXPIRED"},
		{fsm.EventType(9), "EventType(9)"},
		{fsm.RejectUnknown, "UNKNOWN"},
		{fsm.RejectFenced, "FENCED"},
		{fsm.RejectReason(0), "RejectReason(0)"},
	}
	for _, tt := range tests {
		if got := tt.got.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
