package rpc

import (
	"bytes"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// rawCodec sends a request's bytes as they are, as a client that does not
// check UTF-8 would; it decodes replies as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
func (rawCodec) Name() string { return "proto" }

// withInvalidUTF8 encodes m and replaces each "@@@@" in its strings with
// bytes that are never valid UTF-8.
func withInvalidUTF8(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte("@@@@"), []byte{0xff, 0xfe, 0xff, 0xfe})
}

func TestARequestWithInvalidUTF8IsAnInvalidArgumentNamingTheField(t *testing.T) {
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{leader: true}, State: &fakeState{}})
	tests := []struct {
		method string
		req    proto.Message
		want   string
	}{
		{registryv1.Registry_Register_FullMethodName,
			&registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: "a@@@@", Address: "h:1"}},
			"instance.id: is not valid UTF-8"},
		{registryv1.Registry_Register_FullMethodName,
			&registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: "a", Address: "h:1", Metadata: map[string]string{"zone": "@@@@"}}},
			"instance.metadata: is not valid UTF-8"},
		{registryv1.Registry_Beat_FullMethodName,
			&registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "a"}, {Service: "o@@@@", Id: "b"}}},
			"beats.service: is not valid UTF-8"},
		{registryv1.Registry_GetService_FullMethodName,
			&registryv1.GetServiceRequest{Service: "@@@@"},
			"service: is not valid UTF-8"},
	}
	for _, tt := range tests {
		var reply registryv1.RegisterResponse // never filled: every call fails
		err := cc.Invoke(t.Context(), tt.method, withInvalidUTF8(t, tt.req), &reply, grpc.ForceCodecV2(rawCodec{}))
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != tt.want {
			t.Errorf("%s with invalid UTF-8: %v; want INVALID_ARGUMENT %q", tt.method, err, tt.want)
		}
	}

	// A BeatStream frame: the stream ends with the same status.
	st, err := cc.NewStream(t.Context(), &registryv1.Registry_ServiceDesc.Streams[0], registryv1.Registry_BeatStream_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(withInvalidUTF8(t, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "@@@@"}}, Seq: 1})); err != nil {
		t.Fatal(err)
	}
	err = st.RecvMsg(&registryv1.BeatResponse{})
	if s := status.Convert(err); s.Code() != codes.InvalidArgument || s.Message() != "beats.id: is not valid UTF-8" {
		t.Errorf("BeatStream frame with invalid UTF-8: %v; want INVALID_ARGUMENT naming beats.id", err)
	}
}

func TestTheGatewaysConnectionRefusesInvalidUTF8NamingTheField(t *testing.T) {
	_, cc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{leader: true}, State: &fakeState{}})
	client := registryv1.NewRegistryClient(CheckUTF8(cc))
	_, err := client.Deregister(t.Context(), &registryv1.DeregisterRequest{Service: "orders", Id: "a\xff"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "id: is not valid UTF-8" {
		t.Errorf("Deregister with invalid UTF-8 through CheckUTF8: %v; want INVALID_ARGUMENT naming id", err)
	}
	w, err := client.Watch(t.Context(), &registryv1.WatchRequest{Service: "\xffrders"})
	if err == nil {
		_, err = w.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "service: is not valid UTF-8" {
		t.Errorf("Watch with invalid UTF-8 through CheckUTF8: %v; want INVALID_ARGUMENT naming service", err)
	}
}
