package integration_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

func TestRegisterThroughFollowerIsReadableEverywhere(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	waitLeader(t, c)
	follower := c.Followers()[0]

	in := newInstance("payments", "payments-7f3c", 1)
	in.Metadata = map[string]string{"zone": "eu-west-1a", "version": "2.4.1"}
	resp, err := follower.RegistryClient().Register(t.Context(), &registryv1.RegisterRequest{Instance: in})
	if err != nil {
		t.Fatalf("Register through follower %s: %v", follower, err)
	}
	if resp.GetIndex() == 0 {
		t.Fatal("Register acknowledged without a Raft index")
	}
	want := recordOf(in)
	want.CreateIndex = resp.GetIndex()
	if diff := cmp.Diff(want, recordOf(resp.GetInstance())); diff != "" {
		t.Errorf("Register through %s returned an instance unlike the one sent (-sent +returned):\n%s", follower, diff)
	}

	for _, n := range c.Nodes() {
		got := waitForCount(t, n, "payments", 1)
		if diff := cmp.Diff([]record{want}, recordsOf(got)); diff != "" {
			t.Errorf("STALE read on %s (-registered +read):\n%s", n, diff)
		}
	}
}

func TestInvalidRegistrationsAreRejectedBeforeTheLog(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	// A leader, every node's address published, nothing in flight: from
	// here on only the test's own writes append to the log.
	before, err := c.WaitSettled(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	leader, follower := c.Leader(), c.Followers()[0]

	tests := []struct {
		name  string
		field string // must appear in the error message as a word
		edit  func(*registryv1.Instance)
	}{
		{"empty id", "id", func(in *registryv1.Instance) { in.Id = "" }},
		{"200-character service name", "service", func(in *registryv1.Instance) { in.Service = strings.Repeat("s", 200) }},
		{"100 metadata pairs", "metadata", func(in *registryv1.Instance) {
			in.Metadata = make(map[string]string)
			for i := range 100 {
				in.Metadata[fmt.Sprintf("key-%03d", i)] = "value"
			}
		}},
		{"ttl below three beat intervals", "ttl", func(in *registryv1.Instance) {
			in.BeatInterval = durationpb.New(time.Second)
			in.SuspectAfter = durationpb.New(2 * time.Second)
			in.Ttl = durationpb.New(2500 * time.Millisecond)
		}},
		{"empty address", "address", func(in *registryv1.Instance) { in.Address = "" }},
		{"address host not a host name", "address", func(in *registryv1.Instance) { in.Address = "a_b c:80" }},
		{"address port 70000", "address", func(in *registryv1.Instance) { in.Address = "10.0.0.1:70000" }},
		{"incarnation 2^64-1, which would fence the id for good", "incarnation", func(in *registryv1.Instance) { in.Incarnation = math.MaxUint64 }},
	}

	for _, tt := range tests {
		for _, via := range []*harness.Node{leader, follower} {
			in := newInstance("checkout", "checkout-1", 1)
			tt.edit(in)
			_, err := via.RegistryClient().Register(t.Context(), &registryv1.RegisterRequest{Instance: in})
			if code := status.Code(err); code != codes.InvalidArgument {
				t.Errorf("%s through %s: code %v (%v), want InvalidArgument", tt.name, via, code, err)
				continue
			}
			msg := status.Convert(err).Message()
			if !mentions(msg, tt.field) {
				t.Errorf("%s through %s: message %q does not name the field %q", tt.name, via, msg, tt.field)
			}
		}
	}
	after, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.GetLastLogIndex() != before {
		t.Errorf("leader's last log index moved from %d to %d (term %d) across invalid registrations only",
			before, after.GetLastLogIndex(), after.GetTerm())
	}

	// The same check does see a valid write.
	ack, err := register(t, follower, newInstance("checkout", "checkout-1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if ack.CreateIndex <= before {
		t.Errorf("valid registration acknowledged at index %d, want above %d", ack.CreateIndex, before)
	}
	moved, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if moved.GetLastLogIndex() <= before {
		t.Errorf("leader's last log index is %d after a valid registration, want above %d", moved.GetLastLogIndex(), before)
	}
}

// mentions reports whether msg names field as a word of its own, so that
// "id" is found in "instance.id: must not be empty" but not in "invalid".
func mentions(msg, field string) bool {
	return regexp.MustCompile(`(?i)(^|[^a-z])` + regexp.QuoteMeta(field) + `([^a-z]|$)`).MatchString(msg)
}

func TestReflectionListsTheServices(t *testing.T) {
	c := harness.Start(t, harness.Options{Nodes: 1})
	node := c.Nodes()[0]
	want := []string{"grpc.health.v1.Health", "registry.v1.Cluster", "registry.v1.Registry"}

	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	services, err := reflectedServices(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if missing := missingFrom(services, want); len(missing) > 0 {
		t.Errorf("reflection lists %v; missing %v", services, missing)
	}

	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Log("grpcurl is not on PATH; skipping the grpcurl check")
		return
	}
	out, err := exec.CommandContext(ctx, grpcurl, "-plaintext", node.GRPCAddr(), "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl -plaintext %s list: %v\n%s", node.GRPCAddr(), err, out)
	}
	listed := strings.Fields(string(out))
	if missing := missingFrom(listed, want); len(missing) > 0 {
		t.Errorf("grpcurl list prints %q; missing %v", out, missing)
	}
}

// reflectedServices lists the services node exposes through gRPC server
// reflection (v1).
func reflectedServices(ctx context.Context, node *harness.Node) ([]string, error) {
	stream, err := grpc_reflection_v1.NewServerReflectionClient(node.Conn()).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()
	err = stream.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{},
	})
	if err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, fmt.Errorf("reflection error %d: %s", e.GetErrorCode(), e.GetErrorMessage())
	}
	list := resp.GetListServicesResponse()
	if list == nil {
		return nil, errors.New("reflection answered ListServices without a service list")
	}
	var names []string
	for _, s := range list.GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names, nil
}

func missingFrom(have, want []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}
