package fsm

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm/fsmpb"
)

type wireBeat struct {
	Service, ID      string
	Incarnation, Seq uint64
}

// FuzzReadBeatBatch holds readBeatBatch to proto.Unmarshal: it accepts the
// same bytes and reads the same beats and timestamp from them.
func FuzzReadBeatBatch(f *testing.F) {
	valid, err := proto.Marshal(&fsmpb.BeatBatch{NowUnixNs: -7, Beats: []*fsmpb.Beat{
		{Service: "web", Id: "w1", Incarnation: 3}, {Service: "web", Id: "w2", Incarnation: 1, UdpSeq: 9}, {}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte{})
	f.Add(valid[:len(valid)-1])                                                          // truncated
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5))  // beats as a varint: unknown
	f.Add(protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "x")) // now as bytes: unknown
	f.Add(append(protowire.AppendTag(nil, 9, protowire.Fixed64Type), 1, 2, 3, 4, 5, 6, 7, 8))
	beat := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff}) // invalid UTF-8
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), beat))
	beat = protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1)
	beat = protowire.AppendVarint(protowire.AppendTag(beat, 3, protowire.VarintType), 2) // last wins
	beat = protowire.AppendTag(beat, 7, protowire.StartGroupType)
	beat = protowire.AppendTag(beat, 7, protowire.EndGroupType)
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), beat))
	f.Add([]byte{0x00}) // field number 0
	f.Add([]byte{0x0c}) // end group without a start
	f.Fuzz(func(t *testing.T, b []byte) {
		var msg fsmpb.BeatBatch
		perr := proto.Unmarshal(b, &msg)
		var got []wireBeat
		now, err := readBeatBatch(b, func(svc, id []byte, inc, seq uint64) {
			got = append(got, wireBeat{string(svc), string(id), inc, seq})
		})
		if (perr == nil) != (err == nil) {
			t.Fatalf("proto.Unmarshal error %v, readBeatBatch error %v", perr, err)
		}
		if perr != nil {
			return
		}
		var want []wireBeat
		for _, b := range msg.GetBeats() {
			want = append(want, wireBeat{b.GetService(), b.GetId(), b.GetIncarnation(), b.GetUdpSeq()})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("beats (-proto.Unmarshal +readBeatBatch):\n%s", diff)
		}
		if now != msg.GetNowUnixNs() {
			t.Fatalf("now %d, proto.Unmarshal read %d", now, msg.GetNowUnixNs())
		}
	})
}

// The wire path (what Apply runs) and the message path of BeatBatch give
// the same results, events and state: applied, unknown, fenced, replayed
// and reacquiring beats, across services in and out of order.
func TestBeatBatchWireMatchesTheMessagePath(t *testing.T) {
	build := func() *State {
		s := NewState()
		for i := range 40 {
			svc := []string{"a", "b", "c"}[i%3]
			if _, _, err := s.Register(uint64(i+1), &fsmpb.Register{Service: svc, Id: string(rune('A' + i)), Incarnation: 2, NowUnixNs: 10}); err != nil {
				t.Fatal(err)
			}
		}
		s.MarkSuspect(50, &fsmpb.MarkSuspect{NowUnixNs: 20, Entries: []*fsmpb.Condition{
			{Service: "b", Id: "B", Incarnation: 2, LastBeatIndex: 2}, {Service: "a", Id: "D", Incarnation: 2, LastBeatIndex: 4}}})
		s.BeatBatch(51, &fsmpb.BeatBatch{NowUnixNs: 25, Beats: []*fsmpb.Beat{{Service: "c", Id: "C", Incarnation: 2, UdpSeq: 5}}})
		return s
	}
	msg := &fsmpb.BeatBatch{NowUnixNs: 30}
	for i := range 40 {
		svc := []string{"a", "b", "c"}[i%3]
		msg.Beats = append(msg.Beats, &fsmpb.Beat{Service: svc, Id: string(rune('A' + i)), Incarnation: 2})
	}
	msg.Beats = append(msg.Beats,
		&fsmpb.Beat{Service: "a", Id: "zz", Incarnation: 2},           // unknown id
		&fsmpb.Beat{Service: "nope", Id: "A", Incarnation: 2},         // unknown service
		&fsmpb.Beat{Service: "a", Id: "A", Incarnation: 1},            // fenced
		&fsmpb.Beat{Service: "c", Id: "C", Incarnation: 2, UdpSeq: 5}, // replay
		&fsmpb.Beat{Service: "c", Id: "C", Incarnation: 2, UdpSeq: 6}, // new UDP seq
	)
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	sm, sw := build(), build()
	wantRes, wantEv := sm.BeatBatch(60, msg)
	now, err := readBeatBatch(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	gotRes, gotEv := sw.beatBatchWire(60, now, data)
	if len(wantRes.Rejected) != 4 || len(wantEv) != 2 {
		t.Fatalf("message path: %d rejections, %d events; the case wants 4 and 2", len(wantRes.Rejected), len(wantEv))
	}
	if diff := cmp.Diff(wantRes, gotRes); diff != "" {
		t.Errorf("result (-message +wire):\n%s", diff)
	}
	if diff := cmp.Diff(wantEv, gotEv); diff != "" {
		t.Errorf("events (-message +wire):\n%s", diff)
	}
	if diff := cmp.Diff(sm.Instances(), sw.Instances()); diff != "" {
		t.Errorf("state (-message +wire):\n%s", diff)
	}
}
