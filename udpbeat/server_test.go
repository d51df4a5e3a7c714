package udpbeat_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/udpbeat"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

var secret = []byte("0123456789abcdef0123456789abcdef")

// fakeReplica knows the cluster secret and the last UDP seq of "seen".
type fakeReplica struct{}

func (fakeReplica) BeatSecret() []byte { return secret }
func (fakeReplica) LastUDPSeq(service, id string) (uint64, uint64, bool) {
	if id == "seen" {
		return 1, 50, true
	}
	return 0, 0, false
}

// fakeCommitter applies every beat but those of "gone" (unknown) and
// fails whole batches that hold "down".
type fakeCommitter struct {
	mu  sync.Mutex
	got []udpbeat.Received
}

func (f *fakeCommitter) UDPBeats(_ context.Context, beats []udpbeat.Received) ([]udpbeat.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]udpbeat.Outcome, len(beats))
	for i, b := range beats {
		switch b.Beat.ID {
		case "down":
			return nil, errors.New("no leader")
		case "gone":
			out[i].Status = udpbeat.StatusUnknown
		}
		f.got = append(f.got, b)
	}
	return out, nil
}

func startServer(t *testing.T, cfg udpbeat.Config) (*udpbeat.Server, *udpbeat.Metrics, *fakeCommitter) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := udpbeat.NewMetrics(nil)
	fc := &fakeCommitter{}
	s, err := udpbeat.NewServer(cfg, conn, fc, fakeReplica{}, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m, fc
}

func TestServerAnswersEachCaseAndCountsIt(t *testing.T) {
	s, m, fc := startServer(t, udpbeat.Config{})
	conn, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key := func(id string) []byte { return udpbeat.DeriveKey(secret, "svc", id, 1) }
	beat := func(id string, seq uint64) []byte {
		return udpbeat.Append(nil, udpbeat.Beat{Flags: udpbeat.FlagReply, Service: "svc", ID: id, Incarnation: 1, Seq: seq}, key(id))
	}
	for _, c := range []struct {
		name   string
		id     string
		seq    uint64
		want   udpbeat.Status
		reason string // "" for accepted
	}{
		{"applied", "a", 1, udpbeat.StatusApplied, ""},
		{"unknown at the leader", "gone", 1, udpbeat.StatusUnknown, udpbeat.ReasonUnknownInstance},
		{"a replay the replica already saw", "seen", 50, udpbeat.StatusReplay, udpbeat.ReasonReplay},
		{"not committed", "down", 1, udpbeat.StatusRetry, udpbeat.ReasonCommitFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := conn.Write(beat(c.id, c.seq)); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			r, err := udpbeat.ParseReply(buf[:n], key(c.id))
			if err != nil || r.Status != c.want || r.Seq != c.seq {
				t.Fatalf("reply %+v, %v; want %v for seq %d", r, err, c.want, c.seq)
			}
			if c.reason != "" {
				if got := value(t, m.Rejected.WithLabelValues(c.reason)); got != 1 {
					t.Errorf("rejected{%s} = %v, want 1", c.reason, got)
				}
			}
		})
	}
	if got := value(t, m.Accepted); got != 1 {
		t.Errorf("accepted = %v, want 1", got)
	}

	// A bad MAC gets no reply and never reaches the committer.
	bad := beat("a", 2)
	bad[len(bad)-1] ^= 1
	if _, err := conn.Write(bad); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if value(t, m.Rejected.WithLabelValues(udpbeat.ReasonBadMAC)) != 1 {
			return errors.New("bad_mac not counted yet")
		}
		return nil
	})
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, b := range fc.got {
		if b.Beat.Seq == 2 {
			t.Error("a datagram with a bad MAC was committed")
		}
	}
}

func TestServerLimitsEachSource(t *testing.T) {
	s, m, _ := startServer(t, udpbeat.Config{SourceRate: 0.001, SourceBurst: 2})
	conn, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for seq := range uint64(5) {
		d := udpbeat.Append(nil, udpbeat.Beat{Service: "svc", ID: "a", Incarnation: 1, Seq: seq + 1}, udpbeat.DeriveKey(secret, "svc", "a", 1))
		if _, err := conn.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		acc, lim := value(t, m.Accepted), value(t, m.Rejected.WithLabelValues(udpbeat.ReasonRateLimited))
		if acc != 2 || lim != 3 {
			return errors.New("not yet 2 accepted and 3 rate limited")
		}
		return nil
	})
}

func TestConfigValidateNamesTheSetting(t *testing.T) {
	for _, c := range []udpbeat.Config{
		{QueueSize: -1}, {SourceRate: -1}, {CommitTimeout: -time.Second},
	} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", c)
		}
	}
	if err := udpbeat.DefaultConfig().Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
}
