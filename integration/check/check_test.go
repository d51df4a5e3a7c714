package check

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// op builds an operation for the tests; ret < 0 means no return.
func op(client int, in Input, out Output, call, ret time.Duration) Op {
	return Op{Client: client, Node: "n1", Input: in, Output: out, Call: call, Return: ret}
}

func historyOf(ops ...Op) *History { return &History{start: time.Now(), ops: ops} }

func reg(id string, inc uint64) Input {
	return Input{Kind: Register, Service: "s", ID: id, Incarnation: inc}
}
func dereg(id string) Input    { return Input{Kind: Deregister, Service: "s", ID: id} }
func get() Input               { return Input{Kind: Get, Service: "s"} }
func ok() Output               { return Output{Outcome: OK} }
func saw(m ...string) Output   { return Output{Outcome: OK, Instances: m} }
func outcome(o Outcome) Output { return Output{Outcome: o} }

func TestModel(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"sequential", []Op{
			op(0, reg("a", 1), ok(), 0, 10),
			op(0, get(), saw("a@1"), 20, 30),
			op(0, reg("a", 0), outcome(Fenced), 40, 50),
			op(0, dereg("a"), ok(), 60, 70),
			op(0, dereg("a"), outcome(NotFound), 80, 90),
			op(0, get(), saw(), 100, 110),
		}, porcupine.Ok},
		{"stale read after an acknowledged register", []Op{
			op(0, reg("a", 1), ok(), 0, 10),
			op(1, get(), saw(), 20, 30),
		}, porcupine.Illegal},
		{"read concurrent with the register may miss it", []Op{
			op(0, reg("a", 1), ok(), 0, 30),
			op(1, get(), saw(), 10, 20),
		}, porcupine.Ok},
		{"unknown write may take effect late", []Op{
			op(0, reg("a", 1), outcome(Unknown), 0, -1),
			op(1, get(), saw(), 10, 20),
			op(1, get(), saw("a@1"), 30, 40),
		}, porcupine.Ok},
		{"unknown write cannot take effect then vanish", []Op{
			op(0, reg("a", 1), outcome(Unknown), 0, -1),
			op(1, get(), saw("a@1"), 10, 20),
			op(1, get(), saw(), 30, 40),
		}, porcupine.Illegal},
		{"lost register", []Op{
			op(0, reg("a", 2), ok(), 0, 10),
			op(1, reg("a", 1), ok(), 20, 30), // should have been fenced
		}, porcupine.Illegal},
		{"services are independent", []Op{
			op(0, reg("a", 1), ok(), 0, 10),
			op(1, Input{Kind: Get, Service: "other"}, saw(), 20, 30),
		}, porcupine.Ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := porcupine.CheckOperations(Model, historyOf(tt.ops...).Operations())
			want := tt.want == porcupine.Ok
			if got != want {
				t.Errorf("CheckOperations = %v, want %v", got, tt.want)
			}
		})
	}
}

// recordingTB captures the failure of a check.
type recordingTB struct {
	testing.TB
	errors []string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestLinearizableWritesTheFailureFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(LogDirEnv, dir)
	h := historyOf(op(0, reg("a", 1), ok(), 0, 10), op(1, get(), saw(), 20, 30))
	rec := &recordingTB{TB: t}
	if got := Linearizable(rec, h, 10*time.Second); got != porcupine.Illegal {
		t.Fatalf("Linearizable = %v, want Illegal", got)
	}
	if len(rec.errors) != 1 {
		t.Fatalf("errors = %q, want one", rec.errors)
	}
	for _, name := range []string{"history.jsonl", "linearizability.html"} {
		path := dir + "/" + t.Name() + "/" + name
		if !strings.Contains(rec.errors[0], path) {
			t.Errorf("failure %q does not name %s", rec.errors[0], path)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, size %v", path, err, fi)
		}
	}
}

func TestStaleReadsAndLostWrites(t *testing.T) {
	h := historyOf(
		op(0, reg("a", 1), ok(), 0, 10),
		op(1, get(), saw(), 20, 30),      // stale
		op(1, get(), saw("a@1"), 40, 50), // fine
		op(0, dereg("a"), ok(), 60, 70),  // must hold at the end
		op(2, reg("b", 1), outcome(Unknown), 60, -1),
		op(1, get(), saw("a@1"), 80, 90),   // stale
		op(0, reg("c", 1), ok(), 100, 110), // lost below
	)
	stale := h.StaleReads()
	if diff := cmp.Diff([]time.Duration{20, 80}, callsOf(stale)); diff != "" {
		t.Errorf("StaleReads calls (-want +got):\n%s", diff)
	}
	lost := h.LostWrites(map[string][]string{"s": {"b@1"}})
	if len(lost) != 1 || lost[0].Op.Input.ID != "c" {
		t.Errorf("LostWrites = %+v, want the register of c", lost)
	}
	if got := h.LostWrites(map[string][]string{"s": {"c@1"}}); len(got) != 0 {
		t.Errorf("LostWrites with c held = %+v, want none", got)
	}
}

func callsOf(ops []Op) []time.Duration {
	var c []time.Duration
	for _, o := range ops {
		c = append(c, o.Call)
	}
	return c
}

func TestFalseExpirations(t *testing.T) {
	t0 := time.Now()
	key := func(id string) harness.InstanceKey { return harness.InstanceKey{Service: "s", ID: id} }
	expired := func(id string, at time.Duration) harness.RecordedEvent {
		return harness.RecordedEvent{
			Event: &registryv1.Event{
				Type:     registryv1.EventType_EVENT_TYPE_EXPIRED,
				Instance: &registryv1.Instance{Service: "s", Id: id},
			},
			ReceivedAt: t0.Add(at),
		}
	}
	beats := map[harness.InstanceKey]harness.BeatRecord{
		key("early"): {LastAckSent: t0, LastAck: t0.Add(10 * time.Millisecond)},
		key("late"):  {LastAckSent: t0, LastAck: t0.Add(10 * time.Millisecond)},
		key("acked"): {LastAckSent: t0, LastAck: t0.Add(9 * time.Second)},
	}
	events := []harness.RecordedEvent{
		expired("early", 2*time.Second),
		expired("late", 3*time.Second),
		expired("acked", 4*time.Second), // a beat was acknowledged after it
		expired("unknown", time.Second),
	}
	ttl := func(harness.InstanceKey) time.Duration { return 3 * time.Second }
	var got []string
	for _, f := range FalseExpirations(events, beats, ttl) {
		got = append(got, f.Event.Key().ID)
	}
	if diff := cmp.Diff([]string{"early", "acked"}, got); diff != "" {
		t.Errorf("FalseExpirations (-want +got):\n%s", diff)
	}
	lat := DetectionLatencies(events, beats, []harness.InstanceKey{key("late"), key("early")})
	if lat.N != 2 || lat.Max != 3*time.Second || lat.P50 != 2*time.Second {
		t.Errorf("DetectionLatencies = %v", lat)
	}
}

// unavailable is an UNAVAILABLE status with the registry's WriteOutcome.
func unavailable(msg string, proposed bool) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&registryv1.WriteOutcome{Proposed: proposed})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{status.Error(codes.NotFound, "not found"), NotFound},
		{status.Error(codes.FailedPrecondition, "fenced"), Fenced},
		{unavailable("no leader is known", false), Failed},
		{unavailable("any text", false), Failed},
		{unavailable("leadership lost while committing log", true), Unknown},
		// Text alone no longer decides: the detail does.
		{status.Error(codes.Unavailable, "no leader is known"), Unknown},
		// No server answered: gRPC could not connect, or lost the call.
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), Failed},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), Unknown},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), Unknown},
	}
	for _, tt := range tests {
		if got := OutcomeOf(tt.err).Outcome; got != tt.want {
			t.Errorf("OutcomeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
