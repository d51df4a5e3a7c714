package rpc

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm/fsmtest"
	"github.com/regcenter/registry/udpbeat"
)

// The leader authenticates forwarded datagrams again, commits the good
// ones with their sequence numbers, and reports replays per datagram.
func TestForwardUdpBeatsAuthenticatesAgainAndReportsReplays(t *testing.T) {
	rep := fsmtest.NewReplica(t)
	_, cc := newTestConn(t, Config{NodeID: "n1", Applier: rep, Cluster: &fakeCluster{leader: true}, State: rep.FSM})
	client := registryv1.NewRegistryClient(cc)
	ctx := t.Context()
	reg, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "svc", Id: "a", Address: "127.0.0.1:9", Incarnation: 3, BeatInterval: durationpb.New(1e9),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FSM.BeatSecret() == nil || len(reg.BeatKey) != udpbeat.KeySize {
		t.Fatalf("Register: beat key of %d bytes, cluster secret set: %v", len(reg.BeatKey), rep.FSM.BeatSecret() != nil)
	}
	dgram := func(seq uint64, key []byte) []byte {
		return udpbeat.Append(nil, udpbeat.Beat{Service: "svc", ID: "a", Incarnation: 3, Seq: seq}, key)
	}

	// A datagram that does not authenticate fails the call: nothing applied.
	before, _ := rep.FSM.Instance("svc", "a")
	_, err = client.ForwardUdpBeats(ctx, &registryv1.ForwardUdpBeatsRequest{Datagrams: [][]byte{dgram(5, make([]byte, 32))}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a forged forwarded datagram: %v, want INVALID_ARGUMENT", err)
	}
	if after, _ := rep.FSM.Instance("svc", "a"); after.LastBeatIndex != before.LastBeatIndex {
		t.Fatal("a forged forwarded datagram changed LastBeatIndex")
	}

	// Twice the same datagram: the first applies, the second is a replay.
	resp, err := client.ForwardUdpBeats(ctx, &registryv1.ForwardUdpBeatsRequest{Datagrams: [][]byte{dgram(5, reg.BeatKey), dgram(5, reg.BeatKey)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rejected) != 1 || resp.Rejected[0].Reason != registryv1.BeatRejectReason_BEAT_REJECT_REASON_REPLAY || resp.Rejected[0].UdpSeq != 5 {
		t.Fatalf("rejected %v, want the second copy as REPLAY with udp_seq 5", resp.Rejected)
	}
	in, _ := rep.FSM.Instance("svc", "a")
	if in.LastUDPSeq != 5 || in.LastBeatIndex != resp.Index {
		t.Errorf("after the beat: LastUDPSeq %d, LastBeatIndex %d; want 5 and %d", in.LastUDPSeq, in.LastBeatIndex, resp.Index)
	}
	// A new incarnation gets a new key: the old one no longer authenticates.
	reg2, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "svc", Id: "a", Address: "127.0.0.1:9", Incarnation: 4, BeatInterval: durationpb.New(1e9),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if string(reg2.BeatKey) == string(reg.BeatKey) {
		t.Error("a new incarnation got the same beat key")
	}
}
