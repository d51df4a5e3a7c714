package fsm

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// instanceToProto is the message a snapshot's instance record encodes: the
// oracle the hand encoding is held to.
func instanceToProto(in Instance) *fsmpb.Instance {
	return &fsmpb.Instance{
		Service:            in.Service,
		Id:                 in.ID,
		Address:            in.Address,
		Metadata:           in.Metadata,
		Incarnation:        in.Incarnation,
		BeatIntervalNs:     int64(in.BeatInterval),
		SuspectAfterNs:     int64(in.SuspectAfter),
		TtlNs:              int64(in.TTL),
		State:              int32(in.State),
		CreateIndex:        in.CreateIndex,
		ModifyIndex:        in.ModifyIndex,
		LastBeatIndex:      in.LastBeatIndex,
		LastUdpSeq:         in.LastUDPSeq,
		RegisteredAtUnixNs: in.RegisteredAt,
		LastBeatAtUnixNs:   in.LastBeatAt,
	}
}

// marshalRecord is the oracle: the record marshalDelim writes for in, or
// its error.
func marshalRecord(in Instance) ([]byte, error) {
	var buf bytes.Buffer
	_, err := marshalDelim.MarshalTo(&buf, instanceToProto(in))
	return buf.Bytes(), err
}

// checkRecord fails t unless enc encodes in as the oracle does: the same
// bytes, or an error where it fails. The encoder appends after a prefix,
// which it must leave alone.
func checkRecord(t *testing.T, enc *instanceEncoder, in Instance) {
	t.Helper()
	want, werr := marshalRecord(in)
	prefix := []byte("prefix")
	got, err := enc.appendInstanceRecord(prefix, &in)
	if (werr == nil) != (err == nil) {
		t.Fatalf("instance %+v: marshal error %v, hand encoding error %v", in, werr, err)
	}
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("instance %+v: the encoding overwrote what it appends to: %q", in, got)
	}
	if werr != nil {
		if len(got) != len(prefix) {
			t.Fatalf("instance %+v: the failed encoding appended %q", in, got[len(prefix):])
		}
		return
	}
	if diff := cmp.Diff(want, got[len(prefix):]); diff != "" {
		t.Fatalf("instance %+v: record (-marshalDelim +hand):\n%s", in, diff)
	}
}

// full is an instance with every field set.
var full = Instance{
	Service: "payments-api-0042", ID: "0000002a-002a-402a-8000-00000000002a", Address: "127.0.0.1:1066",
	Metadata:    map[string]string{"zone": "zone-0", "version": "1.4.2", "pod": "pod-42"},
	Incarnation: 3, BeatInterval: time.Second, SuspectAfter: 2500 * time.Millisecond, TTL: 5 * time.Second,
	State: StateSuspect, CreateIndex: 10, ModifyIndex: 20, LastBeatIndex: 30, LastUDPSeq: 40,
	RegisteredAt: 1_700_000_000_000_000_000, LastBeatAt: 1_700_000_001_000_000_000,
}

// The hand encoding of an instance record is the deterministic marshal of
// its message, byte for byte: empty strings and zero numbers left out,
// negative and extreme numbers, nil, empty and many-key metadata (sorted
// by key, empty keys and values written), unicode, both states, long
// values whose lengths take several varint bytes.
func TestInstanceRecordIsTheMarshalledMessage(t *testing.T) {
	with := func(f func(*Instance)) Instance {
		in := full
		f(&in)
		return in
	}
	cases := map[string]Instance{
		"zero":             {},
		"full":             full,
		"healthy":          with(func(in *Instance) { in.State = StateHealthy }),
		"key only":         {Service: "web", ID: "w1"},
		"no service":       with(func(in *Instance) { in.Service = "" }),
		"no id":            with(func(in *Instance) { in.ID = "" }),
		"no address":       with(func(in *Instance) { in.Address = "" }),
		"nil metadata":     with(func(in *Instance) { in.Metadata = nil }),
		"empty metadata":   with(func(in *Instance) { in.Metadata = map[string]string{} }),
		"empty key, value": with(func(in *Instance) { in.Metadata = map[string]string{"": "", "a": ""} }),
		"negative durations and times": with(func(in *Instance) {
			in.BeatInterval, in.SuspectAfter, in.TTL = -1, -5, math.MinInt64
			in.RegisteredAt, in.LastBeatAt = -1, math.MinInt64
		}),
		"largest numbers": with(func(in *Instance) {
			in.Incarnation, in.CreateIndex, in.ModifyIndex, in.LastBeatIndex, in.LastUDPSeq = math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64
			in.BeatInterval, in.SuspectAfter, in.TTL, in.RegisteredAt, in.LastBeatAt = math.MaxInt64, math.MaxInt64, math.MaxInt64, math.MaxInt64, math.MaxInt64
		}),
		"unknown state": with(func(in *Instance) { in.State = 255 }),
		"unicode": with(func(in *Instance) {
			in.Service, in.ID, in.Address = "zahlungsdienst-ü", "実例-1", "[::1]:80"
			in.Metadata = map[string]string{"région": "€", "é": "ß", "e": "😀"}
		}),
		"long values": with(func(in *Instance) {
			in.Service, in.ID, in.Address = strings.Repeat("s", 200), strings.Repeat("i", 20_000), strings.Repeat("a", 127)
			in.Metadata = map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 300_000), "z": ""}
		}),
		"many keys": with(func(in *Instance) {
			in.Metadata = map[string]string{}
			for i := range 50 {
				in.Metadata[string(rune('a'+i%26))+strings.Repeat("x", i)] = strings.Repeat("y", 50-i)
			}
		}),
		// Invalid UTF-8 fails to marshal, in any string field.
		"invalid service":   with(func(in *Instance) { in.Service = "\xff" }),
		"invalid id":        with(func(in *Instance) { in.ID = "a\xc3" }),
		"invalid address":   with(func(in *Instance) { in.Address = "\x80" }),
		"invalid key":       with(func(in *Instance) { in.Metadata = map[string]string{"ok": "v", "\xfe": "v"} }),
		"invalid value":     with(func(in *Instance) { in.Metadata = map[string]string{"ok": "\xed\xa0\x80"} }),
		"invalid, no zeros": with(func(in *Instance) { in.Metadata = map[string]string{"k": "\xff"}; in.State = 0 }),
	}
	enc := &instanceEncoder{} // one encoder for all: what one record leaves in it must not leak into the next
	for name, in := range cases {
		t.Run(name, func(t *testing.T) { checkRecord(t, enc, in) })
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		checkRecord(t, enc, randomInstance(rng))
	}
}

// randomInstance returns an instance whose fields are each, at random,
// zero, small, large or negative, with nil, empty or up to five metadata
// pairs.
func randomInstance(rng *rand.Rand) Instance {
	str := func() string {
		switch rng.IntN(5) {
		case 0:
			return ""
		case 1:
			return "ü-" + strings.Repeat("x", rng.IntN(4))
		case 2:
			return strings.Repeat("y", rng.IntN(300))
		default:
			return string(rune('a' + rng.IntN(26)))
		}
	}
	u64 := func() uint64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return uint64(rng.IntN(200))
		default:
			return rng.Uint64() >> rng.IntN(64)
		}
	}
	i64 := func() int64 {
		v := int64(u64())
		if rng.IntN(3) == 0 {
			v = -v
		}
		return v
	}
	in := Instance{
		Service: str(), ID: str(), Address: str(), Incarnation: u64(),
		BeatInterval: time.Duration(i64()), SuspectAfter: time.Duration(i64()), TTL: time.Duration(i64()),
		State:       InstanceState(rng.IntN(3)),
		CreateIndex: u64(), ModifyIndex: u64(), LastBeatIndex: u64(), LastUDPSeq: u64(),
		RegisteredAt: i64(), LastBeatAt: i64(),
	}
	switch n := rng.IntN(7) - 1; {
	case n == 0:
		in.Metadata = map[string]string{}
	case n > 0:
		in.Metadata = make(map[string]string)
		for range n {
			in.Metadata[str()] = str()
		}
	}
	return in
}

// FuzzInstanceRecordEncoding holds the hand encoding of instance records
// to the deterministic marshal of their messages over every field, strings
// that need not be valid UTF-8 included. meta holds up to three metadata
// pairs separated by "\x00"; metaKind says whether the map is nil (0),
// empty (1) or holds them.
func FuzzInstanceRecordEncoding(f *testing.F) {
	f.Add("web", "w1", "10.0.0.1:80", uint8(2), "zone\x00a\x00version\x001", uint64(1), int64(1e9), int64(-5), int64(0), uint8(1), uint64(1), uint64(2), uint64(3), uint64(0), int64(-1), int64(1<<62))
	f.Add("", "", "", uint8(0), "", uint64(0), int64(0), int64(0), int64(0), uint8(0), uint64(0), uint64(0), uint64(0), uint64(0), int64(0), int64(0))
	f.Add("\xff", "ü", "", uint8(1), "", uint64(math.MaxUint64), int64(math.MinInt64), int64(math.MaxInt64), int64(-1), uint8(255), uint64(1<<63), uint64(0), uint64(1), uint64(127), int64(128), int64(-128))
	f.Add("s", "i", "a", uint8(2), "\x00\x00k\x00\xfe", uint64(1), int64(1), int64(1), int64(1), uint8(2), uint64(1), uint64(1), uint64(1), uint64(1), int64(1), int64(1))
	f.Fuzz(func(t *testing.T, service, id, address string, metaKind uint8, meta string,
		inc uint64, beat, suspect, ttl int64, state uint8, create, modify, lastBeat, udpSeq uint64, registered, lastBeatAt int64) {
		in := Instance{
			Service: service, ID: id, Address: address, Incarnation: inc,
			BeatInterval: time.Duration(beat), SuspectAfter: time.Duration(suspect), TTL: time.Duration(ttl),
			State: InstanceState(state), CreateIndex: create, ModifyIndex: modify, LastBeatIndex: lastBeat,
			LastUDPSeq: udpSeq, RegisteredAt: registered, LastBeatAt: lastBeatAt,
		}
		switch metaKind % 3 {
		case 1:
			in.Metadata = map[string]string{}
		case 2:
			in.Metadata = map[string]string{}
			parts := strings.SplitN(meta, "\x00", 6)
			for i := 0; i+1 < len(parts); i += 2 {
				in.Metadata[parts[i]] = parts[i+1]
			}
		}
		var enc instanceEncoder
		checkRecord(t, &enc, in)
		checkRecord(t, &enc, Instance{Service: "after", ID: "another"}) // nothing left over
	})
}
