package fsm_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func udpBeat(svc, id string, inc, seq uint64) *fsmpb.Beat {
	return &fsmpb.Beat{Service: svc, Id: id, Incarnation: inc, UdpSeq: seq}
}

// A UDP beat is applied only with a sequence number above the last one
// applied to its incarnation; anything else is a replay that changes
// nothing. gRPC beats (no sequence number) are never checked.
func TestUDPBeatReplayRule(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{})
	fsmtest.Apply(t, f, 1, register("orders", "a", 1, 100))

	steps := []struct {
		name       string
		beat       *fsmpb.Beat
		wantReject fsm.RejectReason // 0: applied
		wantSeq    uint64
	}{
		{"first UDP beat", udpBeat("orders", "a", 1, 10), 0, 10},
		{"the same datagram again", udpBeat("orders", "a", 1, 10), fsm.RejectReplay, 10},
		{"an older datagram", udpBeat("orders", "a", 1, 9), fsm.RejectReplay, 10},
		{"a gRPC beat is not checked", beat("orders", "a", 1), 0, 10},
		{"the next datagram", udpBeat("orders", "a", 1, 11), 0, 11},
		{"a gap is fine", udpBeat("orders", "a", 1, 1_000_000), 0, 1_000_000},
		{"another incarnation is fenced first", udpBeat("orders", "a", 2, 5), fsm.RejectFenced, 1_000_000},
	}
	index := uint64(1)
	for _, st := range steps {
		index++
		before, _ := f.Instance("orders", "a")
		res := fsmtest.Apply(t, f, index, beats(int64(index), st.beat)).(*fsm.BeatResult)
		after, _ := f.Instance("orders", "a")
		switch {
		case st.wantReject == 0 && len(res.Rejected) != 0:
			t.Errorf("%s: rejected %v, want applied", st.name, res.Rejected)
		case st.wantReject == 0 && after.LastBeatIndex != index:
			t.Errorf("%s: LastBeatIndex %d, want %d", st.name, after.LastBeatIndex, index)
		case st.wantReject != 0 && (len(res.Rejected) != 1 || res.Rejected[0].Reason != st.wantReject):
			t.Errorf("%s: rejected %v, want one %v", st.name, res.Rejected, st.wantReject)
		case st.wantReject != 0 && !cmp.Equal(after, before):
			t.Errorf("%s: a rejected beat changed the instance:\nbefore %+v\nafter  %+v", st.name, before, after)
		}
		if after.LastUDPSeq != st.wantSeq {
			t.Errorf("%s: LastUDPSeq %d, want %d", st.name, after.LastUDPSeq, st.wantSeq)
		}
	}

	// Two copies of one datagram in one batch: the second is a replay.
	index++
	res := fsmtest.Apply(t, f, index, beats(int64(index), udpBeat("orders", "a", 1, 2_000_000), udpBeat("orders", "a", 1, 2_000_000))).(*fsm.BeatResult)
	if len(res.Rejected) != 1 || res.Rejected[0].Reason != fsm.RejectReplay {
		t.Errorf("a datagram twice in one batch: rejected %v, want the second as REPLAY", res.Rejected)
	}

	// The floor survives a same-incarnation re-registration (same key) and
	// a snapshot; a new incarnation (new key) starts from zero.
	index++
	fsmtest.Apply(t, f, index, register("orders", "a", 1, 200))
	if in, _ := f.Instance("orders", "a"); in.LastUDPSeq != 2_000_000 {
		t.Errorf("after re-registering the same incarnation: LastUDPSeq %d, want 2000000", in.LastUDPSeq)
	}
	g := fsmtest.SnapshotRestore(t, f)
	if in, _ := g.Instance("orders", "a"); in.LastUDPSeq != 2_000_000 {
		t.Errorf("after a snapshot round trip: LastUDPSeq %d, want 2000000", in.LastUDPSeq)
	}
	index++
	res = fsmtest.Apply(t, g, index, beats(int64(index), udpBeat("orders", "a", 1, 2_000_000))).(*fsm.BeatResult)
	if len(res.Rejected) != 1 || res.Rejected[0].Reason != fsm.RejectReplay {
		t.Errorf("a replay on the restored replica: rejected %v, want REPLAY", res.Rejected)
	}
	index++
	fsmtest.Apply(t, f, index, register("orders", "a", 2, 300))
	if in, _ := f.Instance("orders", "a"); in.LastUDPSeq != 0 {
		t.Errorf("a new incarnation: LastUDPSeq %d, want 0", in.LastUDPSeq)
	}
}

// The first beat secret applied wins; it is carried by snapshots.
func TestBeatSecretSet(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{})
	if f.BeatSecret() != nil {
		t.Fatal("a new FSM has a beat secret")
	}
	first, second := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for i, c := range []struct {
		secret  []byte
		wantSet bool
	}{{nil, false}, {first, true}, {second, false}} {
		res := fsmtest.Apply(t, f, uint64(i+1), &fsmpb.BeatSecretSet{Secret: c.secret}).(*fsm.BeatSecretResult)
		if res.Set != c.wantSet {
			t.Errorf("BeatSecretSet #%d: Set=%v, want %v", i+1, res.Set, c.wantSet)
		}
	}
	if !bytes.Equal(f.BeatSecret(), first) {
		t.Errorf("BeatSecret() = %x, want the first one applied", f.BeatSecret())
	}
	if g := fsmtest.SnapshotRestore(t, f); !bytes.Equal(g.BeatSecret(), first) {
		t.Errorf("restored BeatSecret() = %x, want %x", g.BeatSecret(), first)
	}
}
