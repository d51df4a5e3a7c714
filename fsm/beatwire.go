package fsm

import (
	"bytes"
	"errors"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// A BeatBatch is the one command applied many times a second with
// thousands of records, so Apply reads it in place from its wire encoding
// instead of decoding it into messages: proto.Unmarshal allocates a Beat
// and two strings per beat, most of the entry's apply cost, only for them
// to be looked up and dropped. readBeatBatch accepts exactly the bytes
// proto.Unmarshal accepts for an fsmpb.BeatBatch and reads the same values
// from them (a fuzz test holds it to that): unknown fields and known
// fields with another wire type are skipped, the last value of a scalar
// field wins, strings must be valid UTF-8.

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// readBeatBatch checks the BeatBatch encoding b in full, returns its
// now_unix_ns, and, if fn is not nil, calls it with each beat in order.
// The slices fn gets alias b.
func readBeatBatch(b []byte, fn func(service, id []byte, incarnation, udpSeq uint64)) (now int64, err error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			b = b[n:]
			svc, id, inc, seq, err := readBeat(v)
			if err != nil {
				return 0, err
			}
			if fn != nil {
				fn(svc, id, inc, seq)
			}
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			b = b[n:]
			now = int64(v)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return now, nil
}

// consumeTag is protowire.ConsumeTag that also rejects field numbers above
// protowire.MaxValidNumber, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1 // protowire's "unexpected EOF"; only the failure matters
	}
	return num, typ, n
}

// readBeat reads one fsmpb.Beat encoding.
func readBeat(b []byte) (service, id []byte, incarnation, udpSeq uint64, err error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, nil, 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, 0, 0, protowire.ParseError(n)
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return nil, nil, 0, 0, errInvalidUTF8
			}
			if num == 1 {
				service = v
			} else {
				id = v
			}
		case (num == 3 || num == 4) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, nil, 0, 0, protowire.ParseError(n)
			}
			b = b[n:]
			if num == 3 {
				incarnation = v
			} else {
				udpSeq = v
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, nil, 0, 0, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return service, id, incarnation, udpSeq, nil
}

// beatBatchWire is BeatBatch on the wire encoding of the command, which
// readBeatBatch has checked and read now from. Lookups by the beats' bytes
// do not allocate; only rejections copy their names.
func (s *State) beatBatchWire(index uint64, now int64, b []byte) (BeatResult, []Event) {
	a := beatApplier{s: s, index: index, now: now, res: BeatResult{Index: index}}
	var service []byte
	var ids map[string]int
	// readBeatBatch has checked b: it cannot fail now.
	_, _ = readBeatBatch(b, func(svc, id []byte, inc, seq uint64) {
		if ids == nil || !bytes.Equal(svc, service) {
			service, ids = svc, s.services[string(svc)]
		}
		pos, ok := ids[string(id)]
		if !ok {
			a.reject(string(svc), string(id), inc, seq, RejectUnknown, 0)
			return
		}
		if reason, current := a.apply(pos, inc, seq); reason != 0 {
			a.reject(string(svc), string(id), inc, seq, reason, current)
		}
	})
	return a.res, a.events
}

// beatApplier applies the beats of one batch.
type beatApplier struct {
	s      *State
	index  uint64
	now    int64
	res    BeatResult
	events []Event
}

// apply applies one beat to the instance at pos, in place: a plain beat
// changes two fields. It returns why the beat is rejected (0: applied)
// and, for RejectFenced, the registered incarnation. Checks only read the
// instance; an applied beat writes, and so copies its chunk if a snapshot
// shares it.
func (a *beatApplier) apply(pos int, inc, seq uint64) (RejectReason, uint64) {
	in := a.s.insts.at(pos)
	if inc != in.Incarnation {
		return RejectFenced, in.Incarnation
	}
	if seq != 0 && seq <= in.LastUDPSeq {
		return RejectReplay, 0
	}
	in = a.s.insts.mut(pos)
	if seq != 0 {
		in.LastUDPSeq = seq
	}
	// Batches may commit out of the order of their stamps (the leader
	// has several under way): a beat never moves LastBeatAt back.
	if in.State == StateSuspect {
		old := *in
		in.State = StateHealthy
		a.s.countSuspect(in.Service, StateSuspect, -1)
		in.ModifyIndex = a.index
		in.LastBeatIndex = a.index
		in.LastBeatAt = max(in.LastBeatAt, a.now)
		a.events = append(a.events, reacquired(a.index, a.now, old, *in))
		a.s.insts.lower(pos)
		return 0, 0
	}
	in.LastBeatIndex = a.index
	in.LastBeatAt = max(in.LastBeatAt, a.now)
	a.s.insts.lower(pos)
	return 0, 0
}

func (a *beatApplier) reject(service, id string, inc, seq uint64, reason RejectReason, current uint64) {
	a.res.Rejected = append(a.res.Rejected, BeatRejection{
		Service: service, ID: id, Incarnation: inc, Reason: reason, Current: current, UDPSeq: seq,
	})
}
