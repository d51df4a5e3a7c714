package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
)

// A snapshot holds one fsmpb.Instance record per instance, a million of
// them at scale: building a message for each and marshalling it
// deterministically (which sorts each record's metadata map through
// reflection) was most of the cost of a snapshot. instanceEncoder writes
// the same bytes by hand, reusing its buffers: appendInstanceRecord
// returns exactly what marshalDelim writes for the instance's message (a
// test and a fuzz target hold it to that), and fails where that marshal
// fails, on a string that is not valid UTF-8. The rules it follows are
// those of deterministic proto3 marshalling by protobuf-go: fields in
// field-number order, zero scalars and empty strings left out, map entries
// sorted by key with both key and value always written, a negative int64
// as its ten-byte two's-complement varint.

// The field numbers of fsmpb.Instance (proto/registry/fsm/v1/fsm.proto).
const (
	instService protowire.Number = iota + 1
	instID
	instAddress
	instMetadata
	instIncarnation
	instBeatIntervalNs
	instSuspectAfterNs
	instTTLNs
	instState
	instCreateIndex
	instModifyIndex
	instLastBeatIndex
	instRegisteredAtUnixNs
	instLastBeatAtUnixNs
	instLastUDPSeq
)

// The field numbers of a map entry.
const (
	mapKey   protowire.Number = 1
	mapValue protowire.Number = 2
)

// instanceEncoder encodes instance records; its zero value is ready. It
// keeps its buffers between records, so one encoder must not be shared.
type instanceEncoder struct {
	body []byte     // the message of the record being encoded
	meta []metaPair // its metadata, sorted by key
}

type metaPair struct{ key, value string }

// appendInstanceRecord appends the length-delimited fsmpb.Instance record
// of in to b: its size as a varint, then the message.
func (e *instanceEncoder) appendInstanceRecord(b []byte, in *Instance) ([]byte, error) {
	body, err := e.appendInstance(e.body[:0], in)
	e.body = body
	if err != nil {
		return b, err
	}
	b = protowire.AppendVarint(b, uint64(len(body)))
	return append(b, body...), nil
}

// appendInstance appends the fsmpb.Instance message of in to b.
func (e *instanceEncoder) appendInstance(b []byte, in *Instance) ([]byte, error) {
	var err error
	if b, err = appendStringField(b, instService, in.Service); err != nil {
		return b, err
	}
	if b, err = appendStringField(b, instID, in.ID); err != nil {
		return b, err
	}
	if b, err = appendStringField(b, instAddress, in.Address); err != nil {
		return b, err
	}
	if len(in.Metadata) > 0 {
		e.meta = e.meta[:0]
		for k, v := range in.Metadata {
			e.meta = append(e.meta, metaPair{k, v})
		}
		slices.SortFunc(e.meta, func(a, b metaPair) int { return strings.Compare(a.key, b.key) })
		for _, p := range e.meta {
			k, v := p.key, p.value
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return b, errInvalidUTF8
			}
			b = protowire.AppendTag(b, instMetadata, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(mapEntrySize(k, v)))
			b = protowire.AppendTag(b, mapKey, protowire.BytesType)
			b = protowire.AppendString(b, k)
			b = protowire.AppendTag(b, mapValue, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	b = appendVarintField(b, instIncarnation, in.Incarnation)
	b = appendVarintField(b, instBeatIntervalNs, uint64(in.BeatInterval))
	b = appendVarintField(b, instSuspectAfterNs, uint64(in.SuspectAfter))
	b = appendVarintField(b, instTTLNs, uint64(in.TTL))
	b = appendVarintField(b, instState, uint64(in.State))
	b = appendVarintField(b, instCreateIndex, in.CreateIndex)
	b = appendVarintField(b, instModifyIndex, in.ModifyIndex)
	b = appendVarintField(b, instLastBeatIndex, in.LastBeatIndex)
	b = appendVarintField(b, instRegisteredAtUnixNs, uint64(in.RegisteredAt))
	b = appendVarintField(b, instLastBeatAtUnixNs, uint64(in.LastBeatAt))
	b = appendVarintField(b, instLastUDPSeq, in.LastUDPSeq)
	return b, nil
}

// mapEntrySize is the size of the message of a map<string, string> entry.
func mapEntrySize(k, v string) int {
	return 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))
}

// appendStringField appends a proto3 string field, unless s is empty.
func appendStringField(b []byte, num protowire.Number, s string) ([]byte, error) {
	if s == "" {
		return b, nil
	}
	if !utf8.ValidString(s) {
		return b, errInvalidUTF8
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s), nil
}

// appendVarintField appends a proto3 varint field (uint64, int64 or a
// non-negative int32: the value converted to uint64), unless v is zero.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// sortInstances returns instances sorted by (Service, ID), the order of a
// snapshot's records, leaving instances in an unspecified order. Services
// are far fewer than instances: it groups the instances by service (a
// counting sort over the sorted service names), then sorts each group by
// ID, so that a comparison reads only IDs and there are fewer of them.
func sortInstances(instances []*Instance) []*Instance {
	start := make(map[string]int) // service → instances, then → its group's next slot
	for _, in := range instances {
		start[in.Service]++
	}
	services := slices.Sorted(maps.Keys(start))
	ends := make([]int, len(services))
	pos := 0
	for i, svc := range services {
		n := start[svc]
		start[svc] = pos
		pos += n
		ends[i] = pos
	}
	out := make([]*Instance, len(instances))
	for _, in := range instances {
		i := start[in.Service]
		out[i] = in
		start[in.Service] = i + 1
	}
	pos = 0
	for _, end := range ends {
		slices.SortFunc(out[pos:end], func(a, b *Instance) int { return strings.Compare(a.ID, b.ID) })
		pos = end
	}
	return out
}

// compareInstancePtrs orders instances by (Service, ID) without copying
// them. Services are interned, so equal ones compare by pointer.
func compareInstancePtrs(a, b *Instance) int {
	if c := strings.Compare(a.Service, b.Service); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// Restoring a snapshot decodes the same million records. instanceDecoder
// reads each one's wire encoding straight into an Instance: it accepts
// exactly the bytes proto.Unmarshal accepts for an fsmpb.Instance and reads
// the same values from them (a fuzz test holds it to that): unknown fields
// and known fields with another wire type are skipped, the last value of a
// field wins, strings must be valid UTF-8, a map entry's missing key or
// value is empty. Like Register it interns the service and the
// metadata keys; the other strings of a record (id, address, metadata
// values) share one allocation, as they live and die with the instance.

// errBadWire is the error for a record that is not a valid encoding: a
// truncated or malformed field. A string that is not UTF-8 fails with
// errInvalidUTF8.
var errBadWire = errors.New("cannot parse invalid wire-format data")

// instanceDecoder decodes instance records; its zero value is ready. It
// keeps its buffers and caches between records, so one decoder must not
// be shared.
type instanceDecoder struct {
	// service and serviceName are the last service read, as bytes and
	// interned: a snapshot's records come sorted by service.
	service     []byte
	serviceName string
	// keys are the interned metadata keys seen, up to maxCachedKeys.
	keys    map[string]string
	entries []mapEntry // the metadata entries of the record being read
	strs    []byte     // its id, address and metadata values
	rec     []byte     // a record too long for the reader's buffer
}

// maxCachedKeys bounds instanceDecoder.keys: label names repeat across
// instances, but a stream may hold any number of distinct ones.
const maxCachedKeys = 1024

type mapEntry struct{ key, value []byte }

// readInstanceRecord reads the next length-delimited instance record from
// br as protodelim.UnmarshalFrom does, with its errors, and decodes it. It
// returns the raw state: checking it is instanceState's job.
func (d *instanceDecoder) readInstanceRecord(br *bufio.Reader) (Instance, int32, error) {
	b, peeked, err := d.nextRecord(br)
	if err != nil {
		return Instance{}, 0, err
	}
	in, state, err := d.decodeInstance(b)
	if peeked {
		_, _ = br.Discard(len(b)) // cannot fail: Peek returned the bytes
	}
	return in, state, err
}

// nextRecord returns the next record's bytes from br: its buffer (peeked
// is then true, and the caller must discard them once read) or, for a
// record longer than it, d.rec. This is protodelim.UnmarshalFrom's
// framing, with its size limit and errors.
func (d *instanceDecoder) nextRecord(br *bufio.Reader) (b []byte, peeked bool, err error) {
	var sizeArr [binary.MaxVarintLen64]byte
	sizeBuf := sizeArr[:0]
	for i := range sizeArr {
		c, err := br.ReadByte()
		if err != nil {
			if err == io.EOF && i != 0 {
				break
			}
			return nil, false, err
		}
		sizeBuf = append(sizeBuf, c)
		if c < 0x80 {
			break
		}
	}
	size, n := protowire.ConsumeVarint(sizeBuf)
	if n < 0 {
		return nil, false, protowire.ParseError(n)
	}
	if size > maxRecordSize {
		return nil, false, &protodelim.SizeTooLargeError{Size: size, MaxSize: maxRecordSize}
	}
	if b, err := br.Peek(int(size)); err == nil {
		return b, true, nil
	}
	d.rec = slices.Grow(d.rec[:0], int(size))[:size]
	if _, err := io.ReadFull(br, d.rec); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	return d.rec, false, nil
}

// maxRecordSize is protodelim's default limit on a record's size, which
// readSnapshot has always applied.
const maxRecordSize = 4 << 20

// decodeInstance decodes the fsmpb.Instance encoding b. The instance it
// returns does not alias b; its State is unset, the raw state returned.
func (d *instanceDecoder) decodeInstance(b []byte) (Instance, int32, error) {
	var in Instance
	var state int32
	var service, id, address []byte
	d.entries = d.entries[:0]
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return Instance{}, 0, errBadWire
		}
		b = b[n:]
		switch {
		case num >= instService && num <= instAddress && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Instance{}, 0, errBadWire
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return Instance{}, 0, errInvalidUTF8
			}
			switch num {
			case instService:
				service = v
			case instID:
				id = v
			default:
				address = v
			}
		case num == instMetadata && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Instance{}, 0, errBadWire
			}
			b = b[n:]
			e, err := readMapEntry(v)
			if err != nil {
				return Instance{}, 0, err
			}
			d.entries = append(d.entries, e)
		case num >= instIncarnation && num <= instLastUDPSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Instance{}, 0, errBadWire
			}
			b = b[n:]
			switch num {
			case instIncarnation:
				in.Incarnation = v
			case instBeatIntervalNs:
				in.BeatInterval = time.Duration(v)
			case instSuspectAfterNs:
				in.SuspectAfter = time.Duration(v)
			case instTTLNs:
				in.TTL = time.Duration(v)
			case instState:
				state = int32(v)
			case instCreateIndex:
				in.CreateIndex = v
			case instModifyIndex:
				in.ModifyIndex = v
			case instLastBeatIndex:
				in.LastBeatIndex = v
			case instRegisteredAtUnixNs:
				in.RegisteredAt = int64(v)
			case instLastBeatAtUnixNs:
				in.LastBeatAt = int64(v)
			default:
				in.LastUDPSeq = v
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Instance{}, 0, errBadWire
			}
			b = b[n:]
		}
	}

	in.Service = d.intern(service)
	// One string holds the id, the address and the metadata values.
	strs := append(d.strs[:0], id...)
	strs = append(strs, address...)
	for _, e := range d.entries {
		strs = append(strs, e.value...)
	}
	d.strs = strs
	s := string(strs)
	in.ID, s = s[:len(id)], s[len(id):]
	in.Address, s = s[:len(address)], s[len(address):]
	if len(d.entries) > 0 {
		in.Metadata = make(map[string]string, len(d.entries))
		for _, e := range d.entries {
			in.Metadata[d.internKey(e.key)] = s[:len(e.value)]
			s = s[len(e.value):]
		}
	}
	return in, state, nil
}

// intern returns the interned service b, reusing the last one.
func (d *instanceDecoder) intern(b []byte) string {
	if d.service == nil || !bytes.Equal(b, d.service) {
		d.serviceName = intern(string(b))
		d.service = append(d.service[:0], b...)
	}
	return d.serviceName
}

// internKey returns the interned metadata key b.
func (d *instanceDecoder) internKey(b []byte) string {
	if k, ok := d.keys[string(b)]; ok {
		return k
	}
	k := intern(string(b))
	if d.keys == nil {
		d.keys = make(map[string]string)
	}
	if len(d.keys) < maxCachedKeys {
		d.keys[k] = k
	}
	return k
}

// readMapEntry reads one map<string, string> entry encoding, as
// proto.Unmarshal does.
func readMapEntry(b []byte) (mapEntry, error) {
	var e mapEntry
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return mapEntry{}, errBadWire
		}
		b = b[n:]
		if (num == mapKey || num == mapValue) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return mapEntry{}, errBadWire
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return mapEntry{}, errInvalidUTF8
			}
			if num == mapKey {
				e.key = v
			} else {
				e.value = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return mapEntry{}, errBadWire
		}
		b = b[n:]
	}
	return e, nil
}
