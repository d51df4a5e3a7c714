package consulapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

func TestDeriveTimingIsAThirdTwoThirdsAndTTLPlusDeregisterAfter(t *testing.T) {
	for _, tc := range []struct {
		ttl, dereg time.Duration
		want       Timing
		wantField  string
	}{
		{ttl: 3 * time.Second, want: Timing{time.Second, 2 * time.Second, 3 * time.Second}},
		{ttl: 30 * time.Second, dereg: time.Minute, want: Timing{10 * time.Second, 20 * time.Second, 90 * time.Second}},
		{ttl: 300 * time.Millisecond, want: Timing{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}},
		{ttl: 299 * time.Millisecond, wantField: "Check.TTL"},
		{ttl: time.Second, dereg: -time.Second, wantField: "Check.DeregisterCriticalServiceAfter"},
		{ttl: time.Hour, dereg: 24 * time.Hour, wantField: "Check.DeregisterCriticalServiceAfter"},
	} {
		got, err := DeriveTiming(tc.ttl, tc.dereg)
		if tc.wantField != "" {
			if !errors.Is(err, validate.ErrInvalid) || !strings.Contains(err.Error(), tc.wantField) {
				t.Errorf("DeriveTiming(%v, %v) = %v; want an error naming %s", tc.ttl, tc.dereg, err, tc.wantField)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("DeriveTiming(%v, %v) = %+v, %v; want %+v", tc.ttl, tc.dereg, got, err, tc.want)
			continue
		}
		// What the registry accepts.
		if err := validate.Timing(got.BeatInterval, got.SuspectAfter, got.TTL); err != nil {
			t.Errorf("DeriveTiming(%v, %v) = %+v, which validate refuses: %v", tc.ttl, tc.dereg, got, err)
		}
	}
}

func TestToInstanceMapsAConsulRegistration(t *testing.T) {
	in, check, err := toInstance(&serviceRegistration{
		Name: "web", Port: 8080, Tags: []string{"a", "b"}, Meta: map[string]string{"v": "1"},
		Check: &serviceCheck{TTL: "9s", DeregisterCriticalServiceAfter: "1m", CheckID: "web-alive"},
	}, "127.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	want := &registryv1.Instance{
		Service: "web", Id: "web", Address: "127.0.0.7:8080",
		Metadata:     map[string]string{"v": "1", MetaTags: "a,b", MetaCheckID: "web-alive"},
		BeatInterval: durationpb.New(3 * time.Second), SuspectAfter: durationpb.New(6 * time.Second), Ttl: durationpb.New(69 * time.Second),
	}
	if diff := cmp.Diff(want.String(), in.String()); diff != "" || check != "web-alive" {
		t.Errorf("toInstance: check %q, diff (-want +got):\n%s", check, diff)
	}
	for name, reg := range map[string]*serviceRegistration{
		"Tags[1]":   {Name: "web", Port: 1, Tags: []string{"a", "b,c"}},
		"Port":      {Name: "web", Port: 70000},
		"Check.TTL": {Name: "web", Port: 1, Check: &serviceCheck{TTL: "soon"}},
		"Checks":    {Name: "web", Port: 1, Check: &serviceCheck{TTL: "1s"}, Checks: []*serviceCheck{{TTL: "2s"}}},
		"Address":   {Name: "web", Port: 1, Address: "not an address!"},
	} {
		if _, _, err := toInstance(reg, "127.0.0.1"); !errors.Is(err, validate.ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: toInstance = %v; want a validation error naming it", name, err)
		}
	}
}

func TestCheckStatusPassingWarningCritical(t *testing.T) {
	now := time.Unix(1000, 0)
	in := func(state registryv1.InstanceState, since time.Duration) *registryv1.Instance {
		return &registryv1.Instance{State: state, BeatInterval: durationpb.New(time.Second), LastBeatAt: timestamppb.New(now.Add(-since))}
	}
	for _, tc := range []struct {
		in   *registryv1.Instance
		want string
	}{
		{in(registryv1.InstanceState_INSTANCE_STATE_HEALTHY, 5*time.Second), statusPassing},
		{in(registryv1.InstanceState_INSTANCE_STATE_SUSPECT, 2*time.Second), statusWarning},
		{in(registryv1.InstanceState_INSTANCE_STATE_SUSPECT, 3*time.Second), statusCritical},
	} {
		if got := checkStatus(tc.in, now); got != tc.want {
			t.Errorf("checkStatus(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestWriteErrorMapsEveryKindOnce(t *testing.T) {
	limited, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
	for _, tc := range []struct {
		err        error
		code       int
		body       string
		retryAfter string
	}{
		{validate.FieldErrorf("Port", "is 0"), http.StatusBadRequest, "Port: is 0", ""},
		{status.Error(codes.InvalidArgument, "instance.id: bad"), http.StatusBadRequest, "instance.id", ""},
		{ErrUnsupported, http.StatusBadRequest, "not supported", ""},
		{status.Error(codes.Unauthenticated, "no token"), http.StatusForbidden, "ACL not found", ""},
		{status.Error(codes.PermissionDenied, "needs service:web:write"), http.StatusForbidden, "Permission denied", ""},
		{ErrUnknownCheck, http.StatusNotFound, "unknown check", ""},
		{status.Error(codes.NotFound, "x"), http.StatusNotFound, "x", ""},
		{limited.Err(), http.StatusTooManyRequests, "slow down", "2"},
		{status.Error(codes.Unavailable, "no leader"), http.StatusServiceUnavailable, "no leader", ""},
		{errors.New("boom"), http.StatusInternalServerError, "boom", ""},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, tc.err)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) || rec.Header().Get("Retry-After") != tc.retryAfter {
			t.Errorf("writeError(%v): %d %q Retry-After %q; want %d with %q, Retry-After %q",
				tc.err, rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"), tc.code, tc.body, tc.retryAfter)
		}
	}
}

func TestTokenFromHeaderBearerOrQuery(t *testing.T) {
	for _, tc := range []struct {
		header, value, query, want string
	}{
		{"X-Consul-Token", "a", "", "a"},
		{"Authorization", "Bearer b", "", "b"},
		{"", "", "token=c", "c"},
		{"X-Consul-Token", "a", "token=c", "a"},
		{"", "", "", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/agent/services?"+tc.query, nil)
		if tc.header != "" {
			r.Header.Set(tc.header, tc.value)
		}
		if got := Token(r); got != tc.want {
			t.Errorf("Token(%s: %q, ?%s) = %q, want %q", tc.header, tc.value, tc.query, got, tc.want)
		}
	}
}
