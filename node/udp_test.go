package node_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/udpbeat"
)

// udpCluster is a three-node cluster with UDP beats and metrics on.
func udpCluster(t *testing.T) *cluster {
	return &cluster{nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.UDPBeatAddr = "127.0.0.1:0"
		cfg.HTTPAddr = "127.0.0.1:0"
	})}
}

// udpMetric reads one UDP beat counter from a node's /metrics.
func udpMetric(t *testing.T, n *node.Node, name, reason string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	label := ""
	if reason != "" {
		label = `\{reason="` + reason + `"\}`
	}
	m := regexp.MustCompile(`(?m)^` + name + label + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s%s in /metrics", name, label)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func rejected(t *testing.T, n *node.Node, reason string) float64 {
	return udpMetric(t, n, "registry_udp_beats_rejected_total", reason)
}

func sendUDP(t *testing.T, addr string, d []byte) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(d); err != nil {
		t.Fatal(err)
	}
}

func udpInstance(service, id string, interval, suspectAfter, ttl time.Duration) *registryv1.Instance {
	return &registryv1.Instance{
		Service: service, Id: id, Address: "127.0.0.1:9", Incarnation: 1,
		BeatInterval: durationpb.New(interval), SuspectAfter: durationpb.New(suspectAfter), Ttl: durationpb.New(ttl),
	}
}

// The acceptance 3: the Python example sender keeps an instance
// alive over UDP (through the followers, in turn) for three times its TTL,
// while an instance registered alongside without beats expires.
func TestPythonUDPSenderKeepsAnInstanceAlive(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: the UDP beat example sender cannot run")
	}
	c := udpCluster(t)
	ctx := t.Context()
	leader := c.leader()
	follower := (leader + 1) % 3
	const interval, ttl = 200 * time.Millisecond, time.Second

	// "alive" is registered first with a long TTL, so that the time the
	// Python interpreter takes to start (seconds on a loaded machine) does
	// not count; once its first UDP beat is applied, the same incarnation
	// (the same beat key) is registered again with the short TTL, and the
	// sender's remaining beats must keep it alive.
	reg, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "alive", interval, 20*time.Second, 30*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.BeatKey) != udpbeat.KeySize {
		t.Fatalf("Register returned a beat key of %d bytes, want %d", len(reg.BeatKey), udpbeat.KeySize)
	}

	// A little over 3 × TTL of beats after the short TTL is set, and 5 s
	// for the sender to start.
	beats := int(3*ttl/interval) + 2 + int(5*time.Second/interval)
	other := 3 - leader - follower
	// Both followers, in turn: each forwards its beats to the leader.
	cmd := exec.CommandContext(ctx, python, "../examples/udp-beat.py", "--addr", c.Nodes[follower].UDPBeatAddr()+","+c.Nodes[other].UDPBeatAddr(),
		"--service", "udp", "--id", "alive", "--incarnation", "1",
		"--interval", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64), "--count", strconv.Itoa(beats), "--quiet")
	cmd.Env = append(cmd.Environ(), "REGISTRY_BEAT_KEY="+base64.StdEncoding.EncodeToString(reg.BeatKey))
	out := &nodetest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; a no-op once it exited
		<-done
	})
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		if in, ok := c.Nodes[leader].FSM().Instance("udp", "alive"); !ok || in.LastUDPSeq == 0 {
			return fmt.Errorf("no UDP beat of udp/alive applied yet; sender output:\n%s", out.String())
		}
		return nil
	})
	if reg, err = c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "alive", interval, 3*interval, ttl)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "idle", interval, 3*interval, ttl)}); err != nil {
		t.Fatal(err)
	}

	// The control: without beats, "idle" expires while "alive" beats.
	poll.Eventually(t, 20*time.Second, func(ctx context.Context) error {
		if _, ok := c.Nodes[leader].FSM().Instance("udp", "idle"); ok {
			return fmt.Errorf("udp/idle has not expired yet")
		}
		return nil
	})
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("the sender failed: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the sender did not finish its %d beats in 30s", beats)
	}
	for i, n := range c.Nodes {
		in, ok := n.FSM().Instance("udp", "alive")
		if !ok {
			t.Fatalf("node %d: udp/alive expired although the sender beat for 3 × TTL; sender output:\n%s", i, out.String())
		}
		if in.LastBeatIndex <= reg.Index || in.LastUDPSeq == 0 {
			t.Errorf("node %d: LastBeatIndex %d (registered at %d), LastUDPSeq %d: no UDP beat applied", i, in.LastBeatIndex, reg.Index, in.LastUDPSeq)
		}
	}
	got := udpMetric(t, c.Nodes[follower], "registry_udp_beats_accepted_total", "") + udpMetric(t, c.Nodes[other], "registry_udp_beats_accepted_total", "")
	if got < float64(beats/2) {
		t.Errorf("the followers counted %v datagrams accepted, want most of %d", got, beats)
	}
}

// A forged datagram (wrong MAC), one for another instance (signed with
// this instance's key) and a replayed one, sent to the node that took the
// original and to another, change nothing and are counted by reason.
func TestForgedAndReplayedUDPBeatsChangeNothing(t *testing.T) {
	c := udpCluster(t)
	ctx := t.Context()
	leader := c.leader()
	a, b := (leader+1)%3, (leader+2)%3
	resp, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "x", time.Second, 3*time.Second, 30*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "y", time.Second, 3*time.Second, 30*time.Second)}); err != nil {
		t.Fatal(err)
	}
	key := resp.BeatKey
	lastBeat := func(id string) []uint64 {
		var out []uint64
		for _, n := range c.Nodes {
			in, _ := n.FSM().Instance("udp", id)
			out = append(out, in.LastBeatIndex)
		}
		return out
	}
	// One genuine beat, through a follower, with a reply.
	good := udpbeat.Append(nil, udpbeat.Beat{Flags: udpbeat.FlagReply, Service: "udp", ID: "x", Incarnation: 1, Seq: 100}, key)
	conn, err := net.Dial("udp", c.Nodes[a].UDPBeatAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(good); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	frame := make([]byte, 64)
	n, err := conn.Read(frame)
	if err != nil {
		t.Fatalf("no reply to a datagram that asked for one: %v", err)
	}
	if r, err := udpbeat.ParseReply(frame[:n], key); err != nil || r.Status != udpbeat.StatusApplied || r.Seq != 100 {
		t.Fatalf("reply %+v, %v; want APPLIED for seq 100", r, err)
	}
	for i, n := range c.Nodes {
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			if in, _ := n.FSM().Instance("udp", "x"); in.LastUDPSeq != 100 {
				return fmt.Errorf("node %d: LastUDPSeq %d, want 100", i, in.LastUDPSeq)
			}
			return nil
		})
	}
	beforeX, beforeY := lastBeat("x"), lastBeat("y")

	wrongKey := make([]byte, udpbeat.KeySize)
	attacks := []struct {
		name, reason string
		to           int
		d            []byte
	}{
		{"wrong MAC", udpbeat.ReasonBadMAC, a, udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "x", Incarnation: 1, Seq: 200}, wrongKey)},
		{"another instance under x's key", udpbeat.ReasonBadMAC, a, udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "y", Incarnation: 1, Seq: 200}, key)},
		{"replay to the same node", udpbeat.ReasonReplay, a, good},
		{"replay to another node", udpbeat.ReasonReplay, b, good},
		{"replay to the leader", udpbeat.ReasonReplay, leader, good},
		{"an older sequence number", udpbeat.ReasonReplay, b, udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "x", Incarnation: 1, Seq: 99}, key)},
		{"a bit flipped", udpbeat.ReasonBadMAC, b, func() []byte {
			d := udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "x", Incarnation: 1, Seq: 300}, key)
			d[len(d)-20] ^= 1
			return d
		}()},
		{"truncated", udpbeat.ReasonMalformed, a, good[:len(good)-1]},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			n := c.Nodes[at.to]
			before := rejected(t, n, at.reason)
			sendUDP(t, n.UDPBeatAddr(), at.d)
			poll.Eventually(t, 20*time.Second, func(context.Context) error {
				if got := rejected(t, n, at.reason); got != before+1 {
					return fmt.Errorf("rejected{reason=%q} is %v, want %v", at.reason, got, before+1)
				}
				return nil
			})
		})
	}
	// A Raft round trip after the attacks: anything they had proposed
	// would be applied everywhere by now.
	if _, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "z", time.Second, 3*time.Second, 30*time.Second)}); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes {
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			if _, ok := n.FSM().Instance("udp", "z"); !ok {
				return fmt.Errorf("node %d has not applied the marker registration", i)
			}
			return nil
		})
	}
	if got := lastBeat("x"); fmt.Sprint(got) != fmt.Sprint(beforeX) {
		t.Errorf("udp/x LastBeatIndex changed from %v to %v", beforeX, got)
	}
	if got := lastBeat("y"); fmt.Sprint(got) != fmt.Sprint(beforeY) {
		t.Errorf("udp/y LastBeatIndex changed from %v to %v", beforeY, got)
	}

	// A new datagram sent to two nodes at once: both may pass their local
	// checks, but the replicated replay rule lets exactly one apply.
	sum := func(name, reason string) (total float64) {
		for _, n := range c.Nodes {
			total += udpMetric(t, n, name, reason)
		}
		return total
	}
	acc0, rep0 := sum("registry_udp_beats_accepted_total", ""), sum("registry_udp_beats_rejected_total", udpbeat.ReasonReplay)
	twice := udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "x", Incarnation: 1, Seq: 1000}, key)
	sendUDP(t, c.Nodes[a].UDPBeatAddr(), twice)
	sendUDP(t, c.Nodes[b].UDPBeatAddr(), twice)
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		acc, rep := sum("registry_udp_beats_accepted_total", ""), sum("registry_udp_beats_rejected_total", udpbeat.ReasonReplay)
		if acc != acc0+1 || rep != rep0+1 {
			return fmt.Errorf("accepted +%v and replay +%v across the nodes, want +1 each", acc-acc0, rep-rep0)
		}
		return nil
	})
}

// With ACLs on, a datagram carries no token: its MAC under the key that a
// Register with service write was given is its permission, on a follower
// (which forwards it without a token) as on the leader.
func TestWithACLsAUDPBeatThroughAFollowerIsApplied(t *testing.T) {
	c := nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.ACLEnabled = true
		cfg.UDPBeatAddr = "127.0.0.1:0"
	})
	ctx := t.Context()
	leader := c.Leader()
	follower := (leader + 1) % 3
	boot, err := registryv1.NewACLClient(c.Conns[leader]).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Registry(leader).Register(bearer(ctx, boot.SecretId), &registryv1.RegisterRequest{Instance: udpInstance("udp", "acl", time.Second, 3*time.Second, 30*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", c.Nodes[follower].UDPBeatAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The follower may not have applied the registration (and the secret)
	// yet: resend, with a new sequence number, until a reply says APPLIED.
	seq := uint64(0)
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		seq++
		if _, err := conn.Write(udpbeat.Append(nil, udpbeat.Beat{Flags: udpbeat.FlagReply, Service: "udp", ID: "acl", Incarnation: 1, Seq: seq}, reg.BeatKey)); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		frame := make([]byte, 64)
		n, err := conn.Read(frame)
		if err != nil {
			return err
		}
		r, err := udpbeat.ParseReply(frame[:n], reg.BeatKey)
		if err != nil {
			return err
		}
		if r.Status != udpbeat.StatusApplied {
			return fmt.Errorf("reply %v", r.Status)
		}
		return nil
	})
	if in, _ := c.Nodes[leader].FSM().Instance("udp", "acl"); in.LastBeatIndex <= reg.Index {
		t.Errorf("LastBeatIndex %d, registered at %d: the beat did not apply", in.LastBeatIndex, reg.Index)
	}
}

func TestUDPBeatStartupProblemsAreClearErrors(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tt := range []struct {
		name   string
		mutate func(*node.Config)
		want   string
	}{
		{"udp port in use", func(c *node.Config) { c.UDPBeatAddr = busy.LocalAddr().String() }, "udp beat addr"},
		{"not host:port", func(c *node.Config) { c.UDPBeatAddr = "7301" }, "udp beat addr"},
		{"a negative queue", func(c *node.Config) { c.UDPBeatAddr = "127.0.0.1:0"; c.UDPBeat.QueueSize = -1 }, "QueueSize (-1)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.NodeID, cfg.DataDir = "n1", t.TempDir()
			cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", ""
			cfg.Logger = testLogger(t, "n1")
			tt.mutate(&cfg)
			n, err := node.New(cfg)
			if err == nil {
				n.Shutdown(context.Background())
				t.Fatal("New succeeded")
			}
			if !contains(err.Error(), tt.want) {
				t.Errorf("New: %q does not name %q", err, tt.want)
			}
		})
	}
}

// A UDP sender beating through the followers keeps its instance through
// a leader's shutdown: the follower's forwards fail until a new leader is
// elected (commit_failed), then its beats commit again, and nothing
// expires.
func TestUDPBeatsKeepAnInstanceThroughALeaderChange(t *testing.T) {
	c := udpCluster(t)
	ctx := t.Context()
	leader := c.leader()
	f1, f2 := (leader+1)%3, (leader+2)%3
	const interval = 200 * time.Millisecond
	reg, err := c.registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: udpInstance("udp", "steady", interval, 3*interval, 5*interval)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(interval / 2)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			to := c.Nodes[[]int{f1, f2}[seq%2]].UDPBeatAddr()
			if conn, err := net.Dial("udp", to); err == nil {
				conn.Write(udpbeat.Append(nil, udpbeat.Beat{Service: "udp", ID: "steady", Incarnation: 1, Seq: seq}, reg.BeatKey))
				conn.Close()
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stop(); <-sent }()

	if err := c.shutdown(leader); err != nil {
		t.Fatal(err)
	}
	var newLeader int
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		for _, i := range []int{f1, f2} {
			if c.Nodes[i].IsLeader() {
				newLeader = i
				return nil
			}
		}
		return errors.New("no new leader yet")
	})
	// A new leader applies the entries of the old term only once an entry
	// of its own has committed: wait until it holds the registration.
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		if got := c.Nodes[newLeader].FSM().AppliedIndex(); got < reg.Index {
			return fmt.Errorf("new leader applied %d, the registration is at %d", got, reg.Index)
		}
		return nil
	})
	// Beats commit under the new leader (LastBeatIndex moves past what it
	// had applied when elected), and for three TTLs nothing expires.
	mark := c.Nodes[newLeader].FSM().AppliedIndex()
	start := time.Now()
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		in, ok := c.Nodes[newLeader].FSM().Instance("udp", "steady")
		if !ok {
			t.Fatal("udp/steady expired across the leader change")
		}
		if in.LastBeatIndex <= mark {
			return fmt.Errorf("LastBeatIndex %d, not past %d yet", in.LastBeatIndex, mark)
		}
		if time.Since(start) < 3*5*interval {
			return errors.New("watching for three TTLs")
		}
		return nil
	})
}
