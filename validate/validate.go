package validate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// The limits. They are part of the API: changing one is a compatibility
// decision, and README.md documents them.
const (
	// MaxNameLen bounds service names and instance ids (characters of
	// [A-Za-z0-9._:-]; at least one).
	MaxNameLen = 128
	// MaxAddressLen bounds an instance address (host:port), in bytes.
	MaxAddressLen = 255
	// MaxMetadataPairs bounds the metadata of one instance.
	MaxMetadataPairs = 64
	// MaxMetadataKeyLen bounds a metadata key, in bytes (at least one).
	MaxMetadataKeyLen = 128
	// MaxMetadataValueLen bounds a metadata value, in bytes.
	MaxMetadataValueLen = 512
	// MinBeatInterval is the shortest beat interval.
	MinBeatInterval = 100 * time.Millisecond
	// MaxTTL is the longest TTL.
	MaxTTL = 24 * time.Hour
	// TTLIntervalFactor: a TTL covers at least this many beat intervals.
	TTLIntervalFactor = 3
	// MaxRequestBytes bounds one request message.
	MaxRequestBytes = 1 << 20
	// MaxBeatBatch bounds the instances of one beat request.
	MaxBeatBatch = 10_000
	// MaxPageSize bounds GetService's page_size.
	MaxPageSize = 100_000
	// MaxPageBytes bounds the instances of one GetService response, in
	// encoded bytes, so that a response fits the 4 MiB a gRPC client (and a
	// node forwarding a read) receives by default.
	MaxPageBytes = 3 << 20
	// MaxSnapshotBytes bounds a backup given to Cluster.SnapshotRestore.
	MaxSnapshotBytes = 1 << 30
	// MaxIncarnation bounds an incarnation (2^53-1, the largest integer a
	// JSON number holds exactly). A registration at the bound can still be
	// superseded by nothing, but every writer can clear it: Deregister
	// without an incarnation (or with the stored one) removes it, and the
	// id is free again. No value above the bound is ever proposed, so no
	// write can fence an id beyond the reach of a client that keeps to it.
	MaxIncarnation = 1<<53 - 1
)

// The defaults of omitted fields. With them an instance beats every 5 s, is
// SUSPECT after 15 s without a beat and removed after 30 s.
const (
	// DefaultBeatInterval is the beat interval of a registration without one.
	DefaultBeatInterval = 5 * time.Second
	// DefaultTTLIntervals: a registration without a TTL gets this many
	// beat intervals.
	DefaultTTLIntervals = 6
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid argument")

// FieldError names the offending field and the limit it breaks.
type FieldError struct {
	// Field is the request field, as named in the API (e.g. "instance.ttl").
	Field string
	// Problem says what is wrong and names the limit.
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// FieldErrorf returns a *FieldError for field; the problem is formatted.
func FieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Name checks a service name or instance id.
func Name(field, s string) error {
	if s == "" {
		return FieldErrorf(field, "must not be empty (1-%d characters of [A-Za-z0-9._:-])", MaxNameLen)
	}
	if n := utf8.RuneCountInString(s); n > MaxNameLen {
		return FieldErrorf(field, "is %d characters long, the limit is %d", n, MaxNameLen)
	}
	for i, r := range s {
		if !nameRune(r) {
			return FieldErrorf(field, "has %q at byte %d; only [A-Za-z0-9._:-] is allowed", r, i)
		}
	}
	return nil
}

// nameOK reports whether Name accepts s, without building an error. Every
// allowed character is ASCII, so bytes are runes here.
func nameOK(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || !nameRune(rune(c)) {
			return false
		}
	}
	return true
}

func nameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == ':' || r == '-'
}

// Incarnation checks an incarnation against MaxIncarnation.
func Incarnation(field string, inc uint64) error {
	if inc > MaxIncarnation {
		return FieldErrorf(field, "is %d, the maximum is %d (2^53-1)", inc, uint64(MaxIncarnation))
	}
	return nil
}

// Address checks an instance address: host:port, at most MaxAddressLen
// bytes, where host is an IP address or a host name of RFC 1123 labels
// (1-63 characters of [A-Za-z0-9-], not starting or ending with "-",
// joined by dots; one trailing dot allowed), and port is 1-65535.
func Address(field, addr string) error {
	if addr == "" {
		return FieldErrorf(field, "must not be empty (host:port)")
	}
	if len(addr) > MaxAddressLen {
		return FieldErrorf(field, "is %d bytes long, the limit is %d", len(addr), MaxAddressLen)
	}
	if !utf8.ValidString(addr) {
		return FieldErrorf(field, "is not valid UTF-8")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return FieldErrorf(field, "%q is not host:port", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return FieldErrorf(field, "port %q is not a number from 1 to 65535", port)
	}
	if _, err := netip.ParseAddr(host); err != nil && (addr[0] == '[' || !hostNameOK(host)) {
		return FieldErrorf(field, "host %q is neither an IP address nor a host name (RFC 1123 labels of 1-63 characters of [A-Za-z0-9-], not starting or ending with \"-\", joined by dots)", host)
	}
	return nil
}

// hostNameOK reports whether s is a host name of RFC 1123 labels.
func hostNameOK(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Metadata checks an instance's metadata.
func Metadata(field string, md map[string]string) error {
	if len(md) > MaxMetadataPairs {
		return FieldErrorf(field, "has %d pairs, the limit is %d", len(md), MaxMetadataPairs)
	}
	// Report the smallest offending key so that the error is deterministic.
	var bad error
	var badKey string
	for k, v := range md {
		var err error
		switch {
		case k == "":
			err = FieldErrorf(field, "has an empty key")
		case len(k) > MaxMetadataKeyLen:
			err = FieldErrorf(field, "key %.20q... is %d bytes long, the limit is %d", k, len(k), MaxMetadataKeyLen)
		case len(v) > MaxMetadataValueLen:
			err = FieldErrorf(field+"["+k+"]", "value is %d bytes long, the limit is %d", len(v), MaxMetadataValueLen)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			err = FieldErrorf(field, "key or value of %q is not valid UTF-8", k)
		}
		if err != nil && (bad == nil || k < badKey) {
			bad, badKey = err, k
		}
	}
	return bad
}

// Timing checks the timing of a registration whose defaults are filled:
// MinBeatInterval ≤ interval < suspect_after ≤ ttl ≤ MaxTTL and
// ttl ≥ TTLIntervalFactor × interval.
func Timing(interval, suspectAfter, ttl time.Duration) error {
	switch {
	case interval < MinBeatInterval:
		return FieldErrorf("instance.beat_interval", "is %v, the minimum is %v", interval, MinBeatInterval)
	case ttl > MaxTTL:
		return FieldErrorf("instance.ttl", "is %v, the maximum is %v", ttl, MaxTTL)
	case ttl < TTLIntervalFactor*interval:
		return FieldErrorf("instance.ttl", "is %v, it must be at least %v (%d × beat_interval %v)",
			ttl, TTLIntervalFactor*interval, TTLIntervalFactor, interval)
	case suspectAfter <= interval:
		return FieldErrorf("instance.suspect_after", "is %v, it must be longer than beat_interval (%v)", suspectAfter, interval)
	case suspectAfter > ttl:
		return FieldErrorf("instance.suspect_after", "is %v, it must not be longer than ttl (%v)", suspectAfter, ttl)
	}
	return nil
}

func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, FieldErrorf(field, "is not a valid duration: %v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, FieldErrorf(field, "is negative (%v)", v)
	}
	return v, nil
}

// NormalizeRegister validates a RegisterRequest and returns the instance to
// propose, with the defaults of omitted fields filled: incarnation 0 is 1; a
// zero beat interval is DefaultBeatInterval; a zero TTL is
// DefaultTTLIntervals × interval; a zero suspect_after is TTL / 2. Output-only
// fields are dropped. The request is not modified.
func NormalizeRegister(req *registryv1.RegisterRequest) (*registryv1.Instance, error) {
	in := req.GetInstance()
	if in == nil {
		return nil, FieldErrorf("instance", "is required")
	}
	if err := Name("instance.service", in.GetService()); err != nil {
		return nil, err
	}
	if err := Name("instance.id", in.GetId()); err != nil {
		return nil, err
	}
	if err := Address("instance.address", in.GetAddress()); err != nil {
		return nil, err
	}
	if err := Incarnation("instance.incarnation", in.GetIncarnation()); err != nil {
		return nil, err
	}
	if err := Metadata("instance.metadata", in.GetMetadata()); err != nil {
		return nil, err
	}
	interval, err := duration("instance.beat_interval", in.GetBeatInterval())
	if err != nil {
		return nil, err
	}
	suspect, err := duration("instance.suspect_after", in.GetSuspectAfter())
	if err != nil {
		return nil, err
	}
	ttl, err := duration("instance.ttl", in.GetTtl())
	if err != nil {
		return nil, err
	}
	if interval == 0 {
		interval = DefaultBeatInterval
	}
	if ttl == 0 {
		ttl = DefaultTTLIntervals * interval
	}
	if suspect == 0 {
		suspect = ttl / 2
	}
	if err := Timing(interval, suspect, ttl); err != nil {
		return nil, err
	}
	return &registryv1.Instance{
		Service:      in.GetService(),
		Id:           in.GetId(),
		Address:      in.GetAddress(),
		Metadata:     in.GetMetadata(),
		Incarnation:  max(in.GetIncarnation(), 1),
		BeatInterval: durationpb.New(interval),
		SuspectAfter: durationpb.New(suspect),
		Ttl:          durationpb.New(ttl),
	}, nil
}

// Deregister validates a DeregisterRequest.
func Deregister(req *registryv1.DeregisterRequest) error {
	if err := Name("service", req.GetService()); err != nil {
		return err
	}
	if err := Name("id", req.GetId()); err != nil {
		return err
	}
	return Incarnation("incarnation", req.GetIncarnation())
}

// NormalizeBeat validates a BeatRequest and sets incarnation 0 to 1 in
// place, as NormalizeRegister does.
func NormalizeBeat(req *registryv1.BeatRequest) error {
	beats := req.GetBeats()
	if len(beats) == 0 {
		return FieldErrorf("beats", "must name at least one instance")
	}
	if len(beats) > MaxBeatBatch {
		return FieldErrorf("beats", "names %d instances, the limit is %d", len(beats), MaxBeatBatch)
	}
	for i, b := range beats {
		if b == nil {
			return FieldErrorf(fmt.Sprintf("beats[%d]", i), "is empty")
		}
		// The field names are formatted only for an error: this runs for
		// every beat, hundreds of thousands a second on a busy leader.
		if !nameOK(b.GetService()) {
			return Name(fmt.Sprintf("beats[%d].service", i), b.GetService())
		}
		if !nameOK(b.GetId()) {
			return Name(fmt.Sprintf("beats[%d].id", i), b.GetId())
		}
		if b.Incarnation == 0 {
			b.Incarnation = 1
		} else if b.Incarnation > MaxIncarnation {
			return Incarnation(fmt.Sprintf("beats[%d].incarnation", i), b.Incarnation)
		}
	}
	return nil
}

// Service validates the service of a read; empty is allowed where allowEmpty
// (Watch of every service).
func Service(field, s string, allowEmpty bool) error {
	if s == "" && allowEmpty {
		return nil
	}
	return Name(field, s)
}
