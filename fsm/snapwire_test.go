package fsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"

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

// instanceFromProto is what readSnapshot made of an instance record's
// message: the oracle the hand decoding is held to.
func instanceFromProto(p *fsmpb.Instance) (Instance, error) {
	state, err := instanceState(p.GetService(), p.GetId(), p.GetState())
	if err != nil {
		return Instance{}, err
	}
	return Instance{
		Service:       intern(p.GetService()),
		ID:            p.GetId(),
		Address:       p.GetAddress(),
		Metadata:      cloneMetadata(p.GetMetadata()),
		Incarnation:   p.GetIncarnation(),
		BeatInterval:  time.Duration(p.GetBeatIntervalNs()),
		SuspectAfter:  time.Duration(p.GetSuspectAfterNs()),
		TTL:           time.Duration(p.GetTtlNs()),
		State:         state,
		CreateIndex:   p.GetCreateIndex(),
		ModifyIndex:   p.GetModifyIndex(),
		LastBeatIndex: p.GetLastBeatIndex(),
		LastUDPSeq:    p.GetLastUdpSeq(),
		RegisteredAt:  p.GetRegisteredAtUnixNs(),
		LastBeatAt:    p.GetLastBeatAtUnixNs(),
	}, nil
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

// decoded is what reading one instance record from a stream gave: the
// instance, or the error, by kind.
type decoded struct {
	In  Instance
	Err string // "" when the record was read
}

// oracleRecord reads the next instance record from br as readSnapshot did
// before the hand decoding: protodelim.UnmarshalFrom, then
// instanceFromProto.
func oracleRecord(br *bufio.Reader) decoded {
	var rec fsmpb.Instance
	if err := protodelim.UnmarshalFrom(br, &rec); err != nil {
		return decoded{Err: errKind(err)}
	}
	in, err := instanceFromProto(&rec)
	if err != nil {
		return decoded{Err: "invalid: " + err.Error()}
	}
	return decoded{In: in}
}

// handRecord reads it as readSnapshot does now.
func handRecord(d *instanceDecoder, br *bufio.Reader) decoded {
	in, state, err := d.readInstanceRecord(br)
	if err != nil {
		return decoded{Err: errKind(err)}
	}
	if in.State, err = instanceState(in.Service, in.ID, state); err != nil {
		return decoded{Err: "invalid: " + err.Error()}
	}
	return decoded{In: in}
}

// errKind names the errors that readSnapshot's callers can tell apart (the
// end of the stream, a truncated record, a record too large); every other
// error is a bad encoding, whose text is the decoder's own.
func errKind(err error) string {
	var tooLarge *protodelim.SizeTooLargeError
	switch {
	case err == io.EOF:
		return "EOF"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.As(err, &tooLarge):
		return fmt.Sprintf("too large: %d > %d", tooLarge.Size, tooLarge.MaxSize)
	default:
		return "bad encoding"
	}
}

// checkDecoding fails t unless the hand decoding reads the records of
// stream as the oracle does, record by record until the first error, with
// a reader buffer of bufSize (a record longer than it is read another way).
func checkDecoding(t *testing.T, d *instanceDecoder, stream []byte, bufSize int) {
	t.Helper()
	want, got := bufio.NewReaderSize(bytes.NewReader(stream), bufSize), bufio.NewReaderSize(bytes.NewReader(stream), bufSize)
	for i := 0; ; i++ {
		w, g := oracleRecord(want), handRecord(d, got)
		if diff := cmp.Diff(w, g); diff != "" {
			t.Fatalf("record %d of stream %x (-protodelim and instanceFromProto +hand):\n%s", i, stream, diff)
		}
		if w.Err != "" {
			return
		}
	}
}

// record returns the length-delimited record whose message is the fields fs.
func record(fs ...[]byte) []byte {
	msg := bytes.Join(fs, nil)
	return append(protowire.AppendVarint(nil, uint64(len(msg))), msg...)
}

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func entry(fs ...[]byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, instMetadata, protowire.BytesType), bytes.Join(fs, nil))
}

// badRecords are instance record streams the hand decoding must read as
// proto.Unmarshal does, and instanceFromProto check as it did.
var badRecords = map[string][]byte{
	"empty stream":                              {},
	"empty record: no state":                    record(),
	"truncated size":                            {0x80},
	"truncated message":                         record(str(1, "web"))[:4],
	"size over 4 MiB":                           protowire.AppendVarint(nil, 4<<20+1),
	"size overflows":                            bytes.Repeat([]byte{0xff}, 11),
	"unknown state":                             record(str(1, "web"), str(2, "w1"), varint(9, 3)),
	"state out of int32":                        record(str(1, "web"), varint(9, 1<<32+1)),
	"negative state":                            record(varint(9, math.MaxUint64)),
	"invalid UTF-8 service":                     record(str(1, "\xff"), varint(9, 1)),
	"invalid UTF-8 address":                     record(str(3, "a\xc3"), varint(9, 1)),
	"invalid UTF-8 key":                         record(entry(str(1, "\xfe"), str(2, "v")), varint(9, 1)),
	"invalid UTF-8 value":                       record(entry(str(1, "k"), str(2, "\x80")), varint(9, 1)),
	"field number 0":                            record([]byte{0x00, 0x01}),
	"field number too large":                    record(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), []byte{1}, varint(9, 1)),
	"long record cut after its size":            protowire.AppendVarint(nil, 100),
	"entry field number too large":              record(entry(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), []byte{1}), varint(9, 1)),
	"end group alone":                           record(protowire.AppendTag(nil, 20, protowire.EndGroupType)),
	"unterminated group":                        record(protowire.AppendTag(nil, 20, protowire.StartGroupType)),
	"entry field number 0":                      record(entry([]byte{0x00, 0x01}), varint(9, 1)),
	"entry truncated":                           record(protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.BytesType), 5), varint(9, 1)),
	"varint truncated":                          record(str(1, "web"), protowire.AppendTag(nil, 5, protowire.VarintType), []byte{0x80}),
	"service as a varint (skipped)":             record(varint(1, 7), str(2, "w"), varint(9, 2)),
	"state as bytes (skipped)":                  record(str(9, "x"), varint(9, 2), str(9, "y")),
	"metadata as a varint (skipped)":            record(varint(4, 1), varint(9, 1)),
	"entry key as a varint (skipped), no value": record(entry(varint(1, 1)), varint(9, 1)),
	"unknown fields everywhere (skipped)": record(varint(99, 1), str(1, "web"), entry(str(2, "v"), str(3, "?"), str(1, "k")),
		append(protowire.AppendTag(nil, 16, protowire.Fixed64Type), 1, 2, 3, 4, 5, 6, 7, 8),
		protowire.AppendTag(nil, 17, protowire.StartGroupType), varint(1, 5), protowire.AppendTag(nil, 17, protowire.EndGroupType),
		varint(9, 1)),
	"last value wins": record(str(1, "a"), str(2, "x"), str(1, "b"), varint(5, 1), varint(5, 9), varint(9, 2), varint(9, 1),
		entry(str(1, "k"), str(2, "1")), entry(str(1, "k"), str(2, "2")), entry(str(2, "only value")), entry()),
	"every number field at its extremes": record(varint(5, math.MaxUint64), varint(6, math.MaxUint64), varint(7, 1<<63),
		varint(8, 1), varint(9, 1), varint(10, math.MaxUint64), varint(11, 0), varint(12, 1<<35), varint(13, math.MaxUint64),
		varint(14, 1<<63), varint(15, 3)),
}

// The hand decoding of instance records reads what protodelim and
// instanceFromProto read: every record the hand encoding writes, and the
// malformed, odd and invalid ones, and corruptions of valid streams. One
// decoder reads them all, as Restore reads a stream, and records longer
// than the reader's buffer are read too.
func TestInstanceRecordDecodingMatchesUnmarshal(t *testing.T) {
	dec := &instanceDecoder{}
	for name, stream := range badRecords {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				checkDecoding(t, dec, stream, size)
				checkDecoding(t, dec, append(slices.Clip(stream), record(str(1, "after"), varint(9, 1))...), size)
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var enc instanceEncoder
	for i := range 500 {
		var stream []byte
		for range 1 + rng.IntN(5) {
			in := randomInstance(rng)
			in.State = []InstanceState{StateHealthy, StateSuspect}[rng.IntN(2)]
			var err error
			if stream, err = enc.appendInstanceRecord(stream, &in); err != nil {
				t.Fatal(err)
			}
		}
		checkDecoding(t, dec, stream, 4096)
		if i%2 == 0 {
			stream = stream[:rng.IntN(len(stream))] // truncated
		}
		stream = slices.Clone(stream)
		for range rng.IntN(4) {
			stream[rng.IntN(len(stream))] ^= byte(1 << rng.IntN(8))
		}
		checkDecoding(t, dec, stream, 16)
	}
}

// FuzzInstanceRecordDecoding holds the hand decoding of a stream of
// instance records to protodelim and instanceFromProto, as
// TestInstanceRecordDecodingMatchesUnmarshal does, over any bytes.
func FuzzInstanceRecordDecoding(f *testing.F) {
	for _, stream := range badRecords {
		f.Add(stream)
	}
	var enc instanceEncoder
	valid, err := enc.appendInstanceRecord(nil, &full)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Fuzz(func(t *testing.T, stream []byte) {
		var dec instanceDecoder
		checkDecoding(t, &dec, stream, 16)
		checkDecoding(t, &dec, stream, 4096)
		checkDecoding(t, &dec, valid, 4096) // nothing left over
	})
}

// sortInstances orders instances as compareInstances does, whatever the
// number of services (none empty, one, many, and the empty name) and
// whatever their order in the store.
func TestSortInstancesOrdersByServiceThenID(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, services := range []int{1, 2, 7, 300} {
		var all []*Instance
		for i := range 2000 {
			svc := fmt.Sprint("svc-", rng.IntN(services))
			if services > 2 && i%50 == 0 {
				svc = ""
			}
			all = append(all, &Instance{Service: intern(svc), ID: fmt.Sprint(rng.IntN(5000)), Incarnation: uint64(i)})
		}
		got := sortInstances(slices.Clone(all))
		if !slices.IsSortedFunc(got, compareInstancePtrs) {
			t.Fatalf("%d services: sortInstances did not sort %d instances by (service, id)", services, len(all))
		}
		// Every instance is there once: equal keys may come in any order.
		key := func(in *Instance) string { return fmt.Sprint(in.Service, "/", in.ID, "/", in.Incarnation) }
		var w, g []string
		for _, in := range all {
			w = append(w, key(in))
		}
		for _, in := range got {
			g = append(g, key(in))
		}
		slices.Sort(w)
		slices.Sort(g)
		if diff := cmp.Diff(w, g); diff != "" {
			t.Fatalf("%d services: instances (-want +got):\n%s", services, diff)
		}
	}
}
