package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// logGen builds a random but reproducible log. It tracks the state with its
// own FSM so that it can name current incarnations and beat indexes (the
// conditions a checker would see) as well as stale and unknown ones.
type logGen struct {
	t     testing.TB
	rng   *rand.Rand
	view  *fsm.FSM
	index uint64
	now   int64
}

const (
	genServices = 10
	genIDs      = 20 // 200 instance keys
)

func (g *logGen) key() (string, string) {
	return fmt.Sprint("svc-", g.rng.IntN(genServices)), fmt.Sprint("id-", g.rng.IntN(genIDs))
}

// incarnation returns the stored incarnation of key most of the time, and
// otherwise a neighbour (fenced) or a random one.
func (g *logGen) incarnation(svc, id string) uint64 {
	in, ok := g.view.Instance(svc, id)
	switch r := g.rng.IntN(10); {
	case ok && r < 7:
		return in.Incarnation
	case ok && r < 9:
		return in.Incarnation + uint64(g.rng.IntN(3)) - 1
	default:
		return uint64(g.rng.IntN(4))
	}
}

// condition names key as a checker would: mostly current, sometimes stale.
func (g *logGen) condition() *fsmpb.Condition {
	svc, id := g.key()
	c := &fsmpb.Condition{Service: svc, Id: id, Incarnation: g.incarnation(svc, id)}
	if in, ok := g.view.Instance(svc, id); ok {
		c.LastBeatIndex = in.LastBeatIndex
		if g.rng.IntN(4) == 0 {
			c.LastBeatIndex -= uint64(g.rng.IntN(3)) // stale if the instance beat since
		}
	} else {
		c.LastBeatIndex = uint64(g.rng.IntN(int(g.index + 1)))
	}
	return c
}

func (g *logGen) command() proto.Message {
	switch r := g.rng.IntN(100); {
	case r < 25:
		return g.register()
	case r < 35:
		return g.deregister()
	case r < 40:
		return g.writeBatch()
	case r < 65:
		c := &fsmpb.BeatBatch{NowUnixNs: g.now}
		for range 1 + g.rng.IntN(8) {
			svc, id := g.key()
			b := &fsmpb.Beat{Service: svc, Id: id, Incarnation: g.incarnation(svc, id)}
			if in, ok := g.view.Instance(svc, id); ok && g.rng.IntN(3) == 0 {
				// A UDP beat: the next sequence numbers, or a replay.
				b.UdpSeq = in.LastUDPSeq + uint64(g.rng.IntN(3))
				if b.UdpSeq > 0 && g.rng.IntN(3) == 0 {
					b.UdpSeq -= uint64(g.rng.IntN(int(min(b.UdpSeq, 3))))
				}
			}
			c.Beats = append(c.Beats, b)
		}
		return c
	case r < 79:
		c := &fsmpb.MarkSuspect{NowUnixNs: g.now}
		for range 1 + g.rng.IntN(6) {
			c.Entries = append(c.Entries, g.condition())
		}
		return c
	case r < 91:
		c := &fsmpb.Expire{NowUnixNs: g.now}
		for range 1 + g.rng.IntN(6) {
			c.Entries = append(c.Entries, g.condition())
		}
		return c
	case r < 94:
		c := &fsmpb.NodeMeta{NodeId: fmt.Sprint("node-", g.rng.IntN(5))}
		if g.rng.IntN(4) > 0 {
			c.GrpcAddress = fmt.Sprintf("10.1.0.%d:9000", g.rng.IntN(3))
			c.HttpAddress = fmt.Sprintf("10.1.0.%d:8000", g.rng.IntN(3))
		}
		return c
	case r < 96:
		return g.aclCommand()
	case r < 97:
		return &fsmpb.BeatSecretSet{Secret: bytes.Repeat([]byte{byte(g.rng.IntN(3))}, g.rng.IntN(2)*32)}
	default:
		return nil // an unknown command marked ignorable
	}
}

// register is a registration of a random key: mostly of the stored
// incarnation, sometimes fenced or superseding.
func (g *logGen) register() *fsmpb.Register {
	svc, id := g.key()
	inc := g.incarnation(svc, id)
	if _, ok := g.view.Instance(svc, id); !ok && g.rng.IntN(2) == 0 {
		inc = 1
	}
	c := &fsmpb.Register{
		Service:        svc,
		Id:             id,
		Address:        fmt.Sprintf("10.0.%d.%d:80", g.rng.IntN(2), g.rng.IntN(2)),
		Incarnation:    inc,
		BeatIntervalNs: int64(g.rng.IntN(3)) * int64(time.Second),
		SuspectAfterNs: int64(g.rng.IntN(3)-1) * int64(time.Second), // sometimes negative
		TtlNs:          int64(g.rng.IntN(3)) * int64(10*time.Second),
		NowUnixNs:      g.now,
	}
	if n := g.rng.IntN(4); n > 0 {
		c.Metadata = make(map[string]string)
		for i := range n {
			c.Metadata[fmt.Sprint("k", i)] = fmt.Sprint(g.rng.IntN(2))
		}
	}
	return c
}

// deregister is a deregistration of a random key, of any incarnation half
// the time.
func (g *logGen) deregister() *fsmpb.Deregister {
	svc, id := g.key()
	inc := g.incarnation(svc, id)
	if g.rng.IntN(2) == 0 {
		inc = 0
	}
	return &fsmpb.Deregister{Service: svc, Id: id, Incarnation: inc, NowUnixNs: g.now}
}

// writeBatch is a group commit of registrations and deregistrations, now
// and then with an empty write.
func (g *logGen) writeBatch() *fsmpb.WriteBatch {
	c := &fsmpb.WriteBatch{}
	for range 1 + g.rng.IntN(8) {
		w := &fsmpb.Write{}
		switch r := g.rng.IntN(20); {
		case r < 13:
			w.Op = &fsmpb.Write_Register{Register: g.register()}
		case r < 19:
			w.Op = &fsmpb.Write_Deregister{Deregister: g.deregister()}
		}
		c.Writes = append(c.Writes, w)
	}
	return c
}

// aclCommand is one of the ACL commands, over a few policies and tokens so
// that sets, replacements, deletes and refusals all happen.
func (g *logGen) aclCommand() proto.Message {
	tok := fmt.Sprint("tok-", g.rng.IntN(4))
	hash := bytes.Repeat([]byte{byte(g.rng.IntN(6))}, 32) // collisions: ErrACLConflict
	switch g.rng.IntN(5) {
	case 0:
		return &fsmpb.ACLBootstrap{AccessorId: tok, SecretHash: hash}
	case 1:
		return &fsmpb.ACLPolicySet{Name: fmt.Sprint("pol-", g.rng.IntN(3)), Rules: fmt.Sprintf("operator = %q", []string{"read", "write"}[g.rng.IntN(2)])}
	case 2:
		return &fsmpb.ACLPolicyDelete{Name: fmt.Sprint("pol-", g.rng.IntN(3))}
	case 3:
		return &fsmpb.ACLTokenSet{AccessorId: tok, SecretHash: hash, Policies: []string{fmt.Sprint("pol-", g.rng.IntN(3))}}
	default:
		return &fsmpb.ACLTokenDelete{AccessorId: tok}
	}
}

// randomLog returns n log entries generated from seed.
func randomLog(t testing.TB, seed uint64, n int) []*raft.Log {
	g := &logGen{t: t, rng: rand.New(rand.NewPCG(seed, seed)), view: fsm.New(fsm.Config{}), now: 1_700_000_000_000_000_000}
	logs := make([]*raft.Log, 0, n)
	for range n {
		g.index++
		g.now += int64(g.rng.IntN(2000)-100) * int64(time.Millisecond) // the leader's clock may step back
		msg := g.command()
		var l *raft.Log
		if msg == nil {
			l = fsmtest.Log(g.index, []byte{byte(fsm.IgnoreUnknownTypeFlag) | 99, 1, 2, 3})
		} else {
			l = fsmtest.MakeLog(t, g.index, msg)
		}
		g.view.Apply(l)
		logs = append(logs, l)
	}
	return logs
}

// outcomes counts the kinds of Apply responses, to show that a log exercises
// every branch.
func outcomes(resp any) []string {
	switch r := resp.(type) {
	case nil:
		return []string{"ignored"}
	case error:
		switch {
		case errors.Is(r, fsm.ErrFenced):
			return []string{"fenced"}
		case errors.Is(r, fsm.ErrNotFound):
			return []string{"not found"}
		case errors.Is(r, fsm.ErrACLBootstrapped), errors.Is(r, fsm.ErrACLNotFound), errors.Is(r, fsm.ErrACLConflict):
			return []string{"acl refused"}
		case errors.Is(r, fsm.ErrEmptyWrite):
			return []string{"empty write"}
		}
		return []string{"error " + r.Error()}
	case *fsm.RegisterResult:
		return []string{fmt.Sprint("register created=", r.Created)}
	case *fsm.DeregisterResult:
		return []string{"deregistered"}
	case *fsm.BeatResult:
		out := []string{"beat batch"}
		for _, rej := range r.Rejected {
			out = append(out, "beat rejected "+rej.Reason.String())
		}
		return out
	case *fsm.ConditionalResult:
		var out []string
		if r.Applied > 0 {
			out = append(out, "condition applied")
		}
		if r.Skipped > 0 {
			out = append(out, "condition skipped")
		}
		return out
	case *fsm.NodeMetaResult:
		return []string{"node meta"}
	case *fsm.ACLResult:
		return []string{"acl applied"}
	case *fsm.BeatSecretResult:
		return []string{fmt.Sprint("beat secret set=", r.Set)}
	case *fsm.WriteBatchResult:
		out := []string{"write batch"}
		for _, w := range r.Results {
			var o []string
			switch {
			case w.Err != nil:
				o = outcomes(w.Err)
			case w.Register != nil:
				o = outcomes(w.Register)
			case w.Deregister != nil:
				o = outcomes(w.Deregister)
			}
			for _, x := range o {
				out = append(out, "batched "+x)
			}
		}
		return out
	}
	return []string{fmt.Sprintf("unexpected %T", resp)}
}

func TestDeterminism(t *testing.T) {
	const n, cut = 10_000, 5_000
	logs := randomLog(t, 42, n)
	cfg := fsm.Config{HistorySize: 2 * n} // keep every event, to compare histories
	a, b, c := fsm.New(cfg), fsm.New(cfg), fsm.New(cfg)

	seen := make(map[string]int)
	for _, l := range logs {
		for _, o := range outcomes(a.Apply(l)) {
			seen[o]++
		}
		b.Apply(l)
	}
	for _, l := range logs[:cut] {
		c.Apply(l)
	}
	c = fsmtest.SnapshotRestore(t, c)
	for _, l := range logs[cut:] {
		c.Apply(l)
	}

	for _, o := range []string{
		"ignored", "fenced", "not found", "register created=true", "register created=false",
		"deregistered", "beat batch", "beat rejected UNKNOWN", "beat rejected FENCED", "beat rejected REPLAY",
		"condition applied", "condition skipped", "node meta", "acl applied", "acl refused",
		"beat secret set=true", "beat secret set=false",
		"write batch", "batched fenced", "batched not found", "batched register created=true",
		"batched register created=false", "batched deregistered", "batched empty write",
	} {
		if seen[o] == 0 {
			t.Errorf("the log never produced %q; outcomes: %v", o, seen)
		}
	}
	for o := range seen {
		if o[0] == 'e' || o[0] == 'u' {
			t.Errorf("unexpected outcome %q", o)
		}
	}
	events := eventsAfter(t, a, 0)
	types := make(map[fsm.EventType]int)
	for _, e := range events {
		types[e.Type]++
	}
	for typ := fsm.EventRegistered; typ <= fsm.EventExpired; typ++ {
		if types[typ] == 0 {
			t.Errorf("the log never emitted %v; events: %v", typ, types)
		}
	}
	t.Logf("outcomes: %v; events: %v", seen, types)
	if all, _ := a.Instances(); len(all) < 20 {
		t.Errorf("only %d instances at the end: the log is too destructive to be a good test", len(all))
	}

	if a.Hash() != b.Hash() || a.Hash() != c.Hash() {
		t.Fatalf("Hash() differs: %s, %s, %s (restored)", a.Hash(), b.Hash(), c.Hash())
	}
	snapA, snapB, snapC := fsmtest.Persist(t, a), fsmtest.Persist(t, b), fsmtest.Persist(t, c)
	if !bytes.Equal(snapA, snapB) || !bytes.Equal(snapA, snapC) {
		t.Fatal("snapshot streams differ")
	}
	if !bytes.Equal(snapA, fsmtest.Persist(t, a)) {
		t.Fatal("two snapshots of the same FSM differ")
	}
	if diff := cmp.Diff(events, eventsAfter(t, b, 0)); diff != "" {
		t.Errorf("histories of two replicas differ (-a +b):\n%s", diff)
	}
	if diff := cmp.Diff(eventsAfter(t, a, cut), eventsAfter(t, c, cut)); diff != "" {
		t.Errorf("history after the snapshot differs (-a +restored):\n%s", diff)
	}

	// The hash is sensitive to the state: one more beat changes it.
	hash := b.Hash()
	for _, in := range must(b.Instances()) {
		b.Apply(fsmtest.MakeLog(t, n+1, beats(1, beat(in.Service, in.ID, in.Incarnation))))
		break
	}
	if b.Hash() == hash {
		t.Error("Hash() did not change after a beat")
	}
}

func must[T any](v T, _ uint64) T { return v }

// The snapshot stream is the on-disk format: the same state must encode to
// the same bytes in every release, or replicas of different versions would
// disagree on Hash and a stored snapshot would change meaning. goldenStream
// is the SHA-256 of the stream the marshal-based encoder (protodelim,
// deterministic) wrote for the state of this random log, which holds
// instances in both states, with and without metadata, negative durations,
// UDP sequence numbers, nodes, ACL records and a beat secret. An encoding
// change that moves it is a format change: it needs a new snapshotVersion.
func TestSnapshotStreamIsStable(t *testing.T) {
	const goldenStream = "6802146602f2f27d82b7ba875e70a546d952de761efe1e6a26212ce018b2659a"
	f := fsm.New(fsm.Config{})
	for _, l := range randomLog(t, 42, 10_000) {
		f.Apply(l)
	}
	sum := sha256.Sum256(fsmtest.Persist(t, f))
	if got := hex.EncodeToString(sum[:]); got != goldenStream {
		t.Errorf("SHA-256 of the snapshot stream = %s, want %s", got, goldenStream)
	}
}
