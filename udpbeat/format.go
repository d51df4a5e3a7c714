package udpbeat

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/regcenter/registry/validate"
)

// The format's constants; see the package documentation for the layout.
const (
	// Version is the only datagram and reply version.
	Version = 1
	// FlagReply in a datagram's flags byte asks for a reply frame.
	FlagReply = 0x01
	// flagIsReply marks a reply frame; a datagram never has it.
	flagIsReply = 0x80
	// TagSize is the size of the HMAC-SHA256 tag that ends every frame.
	TagSize = sha256.Size
	// KeySize is the size of a beat key and of the cluster beat secret.
	KeySize = 32
	// MinDatagramSize is the smallest valid datagram: one-byte names.
	MinDatagramSize = 3 + 1 + 1 + 1 + 16 + TagSize
	// MaxDatagramSize is the largest valid datagram: names of
	// validate.MaxNameLen bytes.
	MaxDatagramSize = 3 + validate.MaxNameLen + 1 + validate.MaxNameLen + 16 + TagSize
	// ReplySize is the size of every reply frame, smaller than any
	// datagram: a reply never amplifies.
	ReplySize = 3 + 8 + 8 + TagSize
)

// Errors of this package. Parse wraps ErrMalformed with the detail.
var (
	// ErrMalformed: the bytes are not a datagram (or reply) of this format.
	ErrMalformed = errors.New("udpbeat: malformed frame")
	// ErrBadMAC: the tag does not authenticate the frame under the key.
	ErrBadMAC = errors.New("udpbeat: bad MAC")
)

// Beat is a parsed datagram.
type Beat struct {
	// Flags is the flags byte: FlagReply or 0.
	Flags       byte
	Service     string
	ID          string
	Incarnation uint64
	// Seq is the sender's sequence number, at least 1, strictly increasing
	// per beat key.
	Seq uint64
}

// WantsReply reports whether the sender asked for a reply frame.
func (b Beat) WantsReply() bool { return b.Flags&FlagReply != 0 }

// appendBody appends the datagram's bytes before the tag.
func appendBody(dst []byte, b Beat) []byte {
	dst = append(dst, Version, b.Flags, byte(len(b.Service)))
	dst = append(dst, b.Service...)
	dst = append(dst, byte(len(b.ID)))
	dst = append(dst, b.ID...)
	dst = binary.BigEndian.AppendUint64(dst, b.Incarnation)
	return binary.BigEndian.AppendUint64(dst, b.Seq)
}

// Append appends the datagram of b, authenticated under key, to dst. It
// does not check b: Parse does, on the receiving side.
func Append(dst []byte, b Beat, key []byte) []byte {
	start := len(dst)
	dst = appendBody(dst, b)
	return appendTag(dst, dst[start:], key)
}

func appendTag(dst, msg, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(dst)
}

// Parse decodes a datagram without checking its tag (Verify does that,
// once the key is derived from the names Parse returns). It checks the
// layout, the version, the flags, the names (validate.Name), the
// incarnation (validate.Incarnation) and that the sequence number is not
// zero; any failure wraps ErrMalformed.
func Parse(d []byte) (Beat, error) {
	if len(d) < MinDatagramSize || len(d) > MaxDatagramSize {
		return Beat{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrMalformed, len(d), MinDatagramSize, MaxDatagramSize)
	}
	if d[0] != Version {
		return Beat{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, d[0], Version)
	}
	var b Beat
	if b.Flags = d[1]; b.Flags&^FlagReply != 0 {
		return Beat{}, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, b.Flags&^FlagReply)
	}
	sl := int(d[2])
	if 3+sl+1 > len(d) {
		return Beat{}, fmt.Errorf("%w: service length %d overruns the datagram", ErrMalformed, sl)
	}
	b.Service = string(d[3 : 3+sl])
	il := int(d[3+sl])
	if want := 3 + sl + 1 + il + 16 + TagSize; want != len(d) {
		return Beat{}, fmt.Errorf("%w: %d bytes, the lengths (service %d, id %d) make %d", ErrMalformed, len(d), sl, il, want)
	}
	b.ID = string(d[4+sl : 4+sl+il])
	p := 4 + sl + il
	b.Incarnation = binary.BigEndian.Uint64(d[p:])
	b.Seq = binary.BigEndian.Uint64(d[p+8:])
	if err := validate.Name("service", b.Service); err != nil {
		return Beat{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := validate.Name("id", b.ID); err != nil {
		return Beat{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := validate.Incarnation("incarnation", b.Incarnation); err != nil {
		return Beat{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if b.Seq == 0 {
		return Beat{}, fmt.Errorf("%w: seq is 0; it starts at 1", ErrMalformed)
	}
	return b, nil
}

// Verify reports whether the tag at the end of d (a datagram or a reply)
// authenticates the bytes before it under key, in constant time.
func Verify(d, key []byte) bool {
	if len(d) < TagSize || len(key) == 0 {
		return false
	}
	body, tag := d[:len(d)-TagSize], d[len(d)-TagSize:]
	return hmac.Equal(tag, appendTag(nil, body, key))
}

// keyLabel separates beat keys from any other use of the secret.
const keyLabel = "registry udp beat key v1\x00"

// DeriveKey returns the beat key of one registration (service, id,
// incarnation) under the cluster beat secret:
//
//	HMAC-SHA256(secret, "registry udp beat key v1" 0x00
//	                    u8 len(service) service u8 len(id) id u64be incarnation)
//
// The same inputs always give the same key, so every node derives the key
// Register handed out; another incarnation gets another key.
func DeriveKey(secret []byte, service, id string, incarnation uint64) []byte {
	msg := make([]byte, 0, len(keyLabel)+2+len(service)+len(id)+8)
	msg = append(msg, keyLabel...)
	msg = append(msg, byte(len(service)))
	msg = append(msg, service...)
	msg = append(msg, byte(len(id)))
	msg = append(msg, id...)
	msg = binary.BigEndian.AppendUint64(msg, incarnation)
	return appendTag(nil, msg, secret)
}

// NewSecret returns a new cluster beat secret: KeySize random bytes. Only
// a proposer calls it, never the FSM.
func NewSecret() ([]byte, error) {
	s := make([]byte, KeySize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("udpbeat: new secret: %w", err)
	}
	return s, nil
}

// Status is a reply frame's verdict on the beat it answers.
type Status uint8

// The reply statuses.
const (
	// StatusApplied: the beat was committed; the instance is registered.
	StatusApplied Status = 0
	// StatusUnknown: the instance is not registered (expired or removed):
	// register again.
	StatusUnknown Status = 1
	// StatusFenced: another incarnation is registered (Reply.Current).
	StatusFenced Status = 2
	// StatusReplay: the sequence number was not above the last one applied.
	StatusReplay Status = 3
	// StatusRetry: the node could not commit the beat now (no leader, a
	// full queue); send the next beat as usual.
	StatusRetry Status = 4
)

// String returns "APPLIED", "UNKNOWN", "FENCED", "REPLAY", "RETRY" or
// "Status(n)".
func (s Status) String() string {
	switch s {
	case StatusApplied:
		return "APPLIED"
	case StatusUnknown:
		return "UNKNOWN"
	case StatusFenced:
		return "FENCED"
	case StatusReplay:
		return "REPLAY"
	case StatusRetry:
		return "RETRY"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Reply is a reply frame.
type Reply struct {
	Status Status
	// Seq is the sequence number of the datagram answered.
	Seq uint64
	// Current is the registered incarnation, for StatusFenced; else 0.
	Current uint64
}

// AppendReply appends the reply frame r, authenticated under the beat key
// of the datagram it answers, to dst.
func AppendReply(dst []byte, r Reply, key []byte) []byte {
	start := len(dst)
	dst = append(dst, Version, flagIsReply, byte(r.Status))
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, r.Current)
	return appendTag(dst, dst[start:], key)
}

// ParseReply decodes a reply frame and checks its tag under key.
func ParseReply(d, key []byte) (Reply, error) {
	if len(d) != ReplySize || d[0] != Version || d[1] != flagIsReply {
		return Reply{}, fmt.Errorf("%w: not a version %d reply frame of %d bytes", ErrMalformed, Version, ReplySize)
	}
	if !Verify(d, key) {
		return Reply{}, ErrBadMAC
	}
	return Reply{
		Status:  Status(d[2]),
		Seq:     binary.BigEndian.Uint64(d[3:]),
		Current: binary.BigEndian.Uint64(d[11:]),
	}, nil
}

// Received is a datagram that was parsed and authenticated, with its bytes
// (which a follower forwards to the leader as they are).
type Received struct {
	Beat     Beat
	Datagram []byte
}

// Outcome is what became of one received beat.
type Outcome struct {
	// Status is StatusApplied, StatusUnknown, StatusFenced or StatusReplay.
	Status Status
	// Current is the registered incarnation, for StatusFenced.
	Current uint64
	// Index is the Raft index of the batch that carried the beat.
	Index uint64
}
