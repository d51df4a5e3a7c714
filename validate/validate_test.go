package validate_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

func valid() *registryv1.Instance {
	return &registryv1.Instance{
		Service:      "orders",
		Id:           "orders-1",
		Address:      "10.0.0.5:8080",
		Metadata:     map[string]string{"zone": "a"},
		Incarnation:  3,
		BeatInterval: durationpb.New(time.Second),
		SuspectAfter: durationpb.New(2 * time.Second),
		Ttl:          durationpb.New(5 * time.Second),
	}
}

func manyPairs(n int) map[string]string {
	md := make(map[string]string, n)
	for i := range n {
		md[fmt.Sprintf("k%03d", i)] = "v"
	}
	return md
}

func TestNormalizeRegisterRejectsEachLimitNamingTheField(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(*registryv1.Instance)
		wantField string
		wantText  string
	}{
		{"empty id", func(in *registryv1.Instance) { in.Id = "" }, "instance.id", "must not be empty"},
		{"200-character service", func(in *registryv1.Instance) { in.Service = strings.Repeat("s", 200) }, "instance.service", "limit is 128"},
		{"service with a slash", func(in *registryv1.Instance) { in.Service = "a/b" }, "instance.service", "[A-Za-z0-9._:-]"},
		{"129-character id", func(in *registryv1.Instance) { in.Id = strings.Repeat("i", 129) }, "instance.id", "limit is 128"},
		{"empty address", func(in *registryv1.Instance) { in.Address = "" }, "instance.address", "host:port"},
		{"address without port", func(in *registryv1.Instance) { in.Address = "10.0.0.5" }, "instance.address", "host:port"},
		{"address with port 0", func(in *registryv1.Instance) { in.Address = "h:0" }, "instance.address", "1 to 65535"},
		{"256-byte address", func(in *registryv1.Instance) { in.Address = strings.Repeat("h", 251) + ":8080" }, "instance.address", "limit is 255"},
		{"100 metadata pairs", func(in *registryv1.Instance) { in.Metadata = manyPairs(100) }, "instance.metadata", "limit is 64"},
		{"empty metadata key", func(in *registryv1.Instance) { in.Metadata = map[string]string{"": "v"} }, "instance.metadata", "empty key"},
		{"long metadata key", func(in *registryv1.Instance) { in.Metadata = map[string]string{strings.Repeat("k", 129): "v"} }, "instance.metadata", "limit is 128"},
		{"long metadata value", func(in *registryv1.Instance) { in.Metadata = map[string]string{"k": strings.Repeat("v", 513)} }, "instance.metadata[k]", "limit is 512"},
		{"invalid UTF-8 value", func(in *registryv1.Instance) { in.Metadata = map[string]string{"k": "\xff"} }, "instance.metadata", "UTF-8"},
		{"interval below 100ms", func(in *registryv1.Instance) { in.BeatInterval = durationpb.New(50 * time.Millisecond) }, "instance.beat_interval", "minimum is 100ms"},
		{"TTL below 3 × interval", func(in *registryv1.Instance) { in.Ttl = durationpb.New(2500 * time.Millisecond) }, "instance.ttl", "is 2.5s, it must be at least 3s (3 × beat_interval 1s)"},
		{"TTL above 24h", func(in *registryv1.Instance) { in.Ttl = durationpb.New(25 * time.Hour) }, "instance.ttl", "maximum is 24h"},
		{"suspect_after not above interval", func(in *registryv1.Instance) { in.SuspectAfter = durationpb.New(time.Second) }, "instance.suspect_after", "longer than beat_interval"},
		{"suspect_after above TTL", func(in *registryv1.Instance) { in.SuspectAfter = durationpb.New(6 * time.Second) }, "instance.suspect_after", "not be longer than ttl"},
		{"negative interval", func(in *registryv1.Instance) { in.BeatInterval = durationpb.New(-time.Second) }, "instance.beat_interval", "negative"},
		{"incarnation 2^64-1", func(in *registryv1.Instance) { in.Incarnation = math.MaxUint64 }, "instance.incarnation", "maximum is 9007199254740991"},
		{"incarnation 2^53", func(in *registryv1.Instance) { in.Incarnation = 1 << 53 }, "instance.incarnation", "maximum is 9007199254740991"},
		{"host with a space", func(in *registryv1.Instance) { in.Address = "a b:80" }, "instance.address", "RFC 1123"},
		{"host with an underscore", func(in *registryv1.Instance) { in.Address = "a_b.example:80" }, "instance.address", "RFC 1123"},
		{"label starting with -", func(in *registryv1.Instance) { in.Address = "-a.example:80" }, "instance.address", "RFC 1123"},
		{"label ending with -", func(in *registryv1.Instance) { in.Address = "a-.example:80" }, "instance.address", "RFC 1123"},
		{"empty label", func(in *registryv1.Instance) { in.Address = "a..example:80" }, "instance.address", "RFC 1123"},
		{"64-character label", func(in *registryv1.Instance) { in.Address = strings.Repeat("a", 64) + ".example:80" }, "instance.address", "RFC 1123"},
		{"host of a dot", func(in *registryv1.Instance) { in.Address = ".:80" }, "instance.address", "RFC 1123"},
		{"URL, not host:port", func(in *registryv1.Instance) { in.Address = "http://a:80" }, "instance.address", "host:port"},
		{"bracketed non-IP", func(in *registryv1.Instance) { in.Address = "[host]:80" }, "instance.address", "RFC 1123"},
		{"port 65536", func(in *registryv1.Instance) { in.Address = "h:65536" }, "instance.address", "1 to 65535"},
		{"port -1", func(in *registryv1.Instance) { in.Address = "h:-1" }, "instance.address", "1 to 65535"},
		{"named port", func(in *registryv1.Instance) { in.Address = "h:http" }, "instance.address", "1 to 65535"},
		{"unicode host", func(in *registryv1.Instance) { in.Address = "bücher.example:80" }, "instance.address", "RFC 1123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid()
			tt.mutate(in)
			_, err := validate.NormalizeRegister(&registryv1.RegisterRequest{Instance: in})
			if !errors.Is(err, validate.ErrInvalid) {
				t.Fatalf("NormalizeRegister: got %v, want an error wrapping ErrInvalid", err)
			}
			var fe *validate.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Fatalf("NormalizeRegister: got %v, want field %q", err, tt.wantField)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("NormalizeRegister: %q does not say %q", err, tt.wantText)
			}
		})
	}
}

func TestNormalizeRegisterAcceptsTheLimitsThemselves(t *testing.T) {
	in := valid()
	in.Service = strings.Repeat("s", validate.MaxNameLen)
	in.Id = "a.b_c:d-E9"
	in.Metadata = manyPairs(validate.MaxMetadataPairs)
	in.Metadata["k000"] = strings.Repeat("v", validate.MaxMetadataValueLen)
	in.BeatInterval = durationpb.New(validate.MinBeatInterval)
	in.SuspectAfter = durationpb.New(200 * time.Millisecond)
	in.Ttl = durationpb.New(300 * time.Millisecond)
	if _, err := validate.NormalizeRegister(&registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatalf("NormalizeRegister at the limits: %v", err)
	}
}

func TestAddressAcceptsHostNamesAndIPs(t *testing.T) {
	for _, addr := range []string{
		"10.0.0.5:8080", "h:1", "localhost:65535", "orders-1.svc.cluster.local:80",
		"orders-1.svc.cluster.local.:80", "[::1]:7001", "[fe80::1%eth0]:80", "[2001:db8::1]:443",
		"0.0.0.0:1", "a:80", "1a.example:80", "xn--bcher-kva.example:80",
		strings.Repeat("a", 63) + ".example:80",
	} {
		if err := validate.Address("instance.address", addr); err != nil {
			t.Errorf("Address(%q): %v", addr, err)
		}
	}
}

func TestIncarnationBoundIsTheMaximumAllowed(t *testing.T) {
	in := valid()
	in.Incarnation = validate.MaxIncarnation
	if _, err := validate.NormalizeRegister(&registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Errorf("NormalizeRegister at MaxIncarnation: %v", err)
	}
	err := validate.Deregister(&registryv1.DeregisterRequest{Service: "s", Id: "i", Incarnation: validate.MaxIncarnation + 1})
	var fe *validate.FieldError
	if !errors.As(err, &fe) || fe.Field != "incarnation" {
		t.Errorf("Deregister above MaxIncarnation: got %v, want a FieldError for incarnation", err)
	}
	if err := validate.Deregister(&registryv1.DeregisterRequest{Service: "s", Id: "i", Incarnation: validate.MaxIncarnation}); err != nil {
		t.Errorf("Deregister at MaxIncarnation: %v", err)
	}
}

func TestNormalizeRegisterFillsDefaults(t *testing.T) {
	tests := []struct {
		name                   string
		interval, suspect, ttl time.Duration
		want                   [3]time.Duration
	}{
		{"all omitted", 0, 0, 0, [3]time.Duration{5 * time.Second, 15 * time.Second, 30 * time.Second}},
		{"interval only", time.Second, 0, 0, [3]time.Duration{time.Second, 3 * time.Second, 6 * time.Second}},
		{"interval and ttl", time.Second, 0, 5 * time.Second, [3]time.Duration{time.Second, 2500 * time.Millisecond, 5 * time.Second}},
		{"all given", time.Second, 4 * time.Second, 9 * time.Second, [3]time.Duration{time.Second, 4 * time.Second, 9 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &registryv1.Instance{Service: "s", Id: "i", Address: "h:1", State: registryv1.InstanceState_INSTANCE_STATE_SUSPECT, CreateIndex: 9}
			if tt.interval != 0 {
				in.BeatInterval = durationpb.New(tt.interval)
			}
			if tt.suspect != 0 {
				in.SuspectAfter = durationpb.New(tt.suspect)
			}
			if tt.ttl != 0 {
				in.Ttl = durationpb.New(tt.ttl)
			}
			got, err := validate.NormalizeRegister(&registryv1.RegisterRequest{Instance: in})
			if err != nil {
				t.Fatal(err)
			}
			want := &registryv1.Instance{
				Service: "s", Id: "i", Address: "h:1", Incarnation: 1,
				BeatInterval: durationpb.New(tt.want[0]),
				SuspectAfter: durationpb.New(tt.want[1]),
				Ttl:          durationpb.New(tt.want[2]),
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("NormalizeRegister (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNormalizeBeat(t *testing.T) {
	ref := func(s, id string, inc uint64) *registryv1.InstanceRef {
		return &registryv1.InstanceRef{Service: s, Id: id, Incarnation: inc}
	}
	tests := []struct {
		name      string
		beats     []*registryv1.InstanceRef
		wantField string
	}{
		{"empty batch", nil, "beats"},
		{"too many", make([]*registryv1.InstanceRef, validate.MaxBeatBatch+1), "beats"},
		{"nil entry", []*registryv1.InstanceRef{nil}, "beats[0]"},
		{"bad service", []*registryv1.InstanceRef{ref("s", "i", 1), ref("", "i", 1)}, "beats[1].service"},
		{"bad id", []*registryv1.InstanceRef{ref("s", "i i", 1)}, "beats[0].id"},
		{"id too long", []*registryv1.InstanceRef{ref("s", strings.Repeat("i", validate.MaxNameLen+1), 1)}, "beats[0].id"},
		{"non-ASCII service", []*registryv1.InstanceRef{ref("s", "i", 1), ref("sé", "i", 1)}, "beats[1].service"},
		{"long non-ASCII id", []*registryv1.InstanceRef{ref("s", strings.Repeat("é", validate.MaxNameLen), 1)}, "beats[0].id"},
		{"incarnation above the bound", []*registryv1.InstanceRef{ref("s", "i", 1), ref("s", "j", math.MaxUint64)}, "beats[1].incarnation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate.NormalizeBeat(&registryv1.BeatRequest{Beats: tt.beats})
			var fe *validate.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Fatalf("NormalizeBeat: got %v, want field %q", err, tt.wantField)
			}
		})
	}
	req := &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{ref("s", "i", 0), ref("s", "j", 7),
		ref(strings.Repeat("s", validate.MaxNameLen), "A-Z_a.z:0-9", 1)}}
	if err := validate.NormalizeBeat(req); err != nil {
		t.Fatal(err)
	}
	if got := []uint64{req.Beats[0].Incarnation, req.Beats[1].Incarnation}; !cmp.Equal(got, []uint64{1, 7}) {
		t.Errorf("incarnations after NormalizeBeat: %v, want [1 7]", got)
	}
}

// BenchmarkNormalizeBeat10k validates one beat request of 10,000 instances
// (the largest allowed), as every node does for every beat it receives.
func BenchmarkNormalizeBeat10k(b *testing.B) {
	req := &registryv1.BeatRequest{}
	for i := range validate.MaxBeatBatch {
		req.Beats = append(req.Beats, &registryv1.InstanceRef{Service: fmt.Sprintf("svc-%d", i%100), Id: fmt.Sprintf("inst-%d", i), Incarnation: 1})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.NormalizeBeat(req); err != nil {
			b.Fatal(err)
		}
	}
}
