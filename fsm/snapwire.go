package fsm

import (
	"slices"
	"strings"
	"unicode/utf8"

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
	body []byte   // the message of the record being encoded
	keys []string // its metadata keys, sorted
}

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
		e.keys = e.keys[:0]
		for k := range in.Metadata {
			e.keys = append(e.keys, k)
		}
		slices.Sort(e.keys)
		for _, k := range e.keys {
			v := in.Metadata[k]
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

// compareInstancePtrs orders instances by (Service, ID) without copying
// them. Services are interned, so equal ones compare by pointer.
func compareInstancePtrs(a, b *Instance) int {
	if c := strings.Compare(a.Service, b.Service); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}
