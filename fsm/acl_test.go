package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func hashOf(s string) []byte { return bytes.Repeat([]byte(s), 32) }

// aclFSM applies a bootstrap, two policies and a token at indexes 1 to 4.
func aclFSM(t *testing.T) *fsm.FSM {
	t.Helper()
	f := fsmtest.New(t, fsm.Config{})
	for i, msg := range []proto.Message{
		&fsmpb.ACLBootstrap{AccessorId: "mgmt", SecretHash: hashOf("m"), Description: "bootstrap"},
		&fsmpb.ACLPolicySet{Name: "orders", Rules: `service "orders" { policy = "write" }`},
		&fsmpb.ACLPolicySet{Name: "ops", Rules: `operator = "read"`},
		&fsmpb.ACLTokenSet{AccessorId: "tok-orders", SecretHash: hashOf("o"), Policies: []string{"orders", "ops"}, Description: "orders app"},
	} {
		res, ok := fsmtest.Apply(t, f, uint64(i+1), msg).(*fsm.ACLResult)
		if !ok || res.Index != uint64(i+1) {
			t.Fatalf("apply %T: got %v, want an *ACLResult at index %d", msg, res, i+1)
		}
	}
	return f
}

func TestACLApply(t *testing.T) {
	f := aclFSM(t)

	tok, rules, idx, ok := f.ACLResolve(hashOf("o"))
	if !ok || tok.AccessorID != "tok-orders" || idx != 4 {
		t.Fatalf("ACLResolve(o) = %v, %d, %v; want tok-orders at ACL index 4", tok.AccessorID, idx, ok)
	}
	if diff := cmp.Diff([]fsm.ACLPolicy{
		{Name: "orders", Rules: `service "orders" { policy = "write" }`},
		{Name: "ops", Rules: `operator = "read"`},
	}, rules); diff != "" {
		t.Errorf("ACLResolve rules (-want +got):\n%s", diff)
	}
	if tok, _, _, ok := f.ACLResolve(hashOf("m")); !ok || !tok.Management {
		t.Errorf("bootstrap token: %+v, %v; want a management token", tok.AccessorID, ok)
	}

	// Bootstrap works once.
	err, _ := fsmtest.Apply(t, f, 5, &fsmpb.ACLBootstrap{AccessorId: "again", SecretHash: hashOf("a")}).(error)
	if !errors.Is(err, fsm.ErrACLBootstrapped) {
		t.Errorf("second bootstrap = %v, want ErrACLBootstrapped", err)
	}
	if _, _, _, ok := f.ACLResolve(hashOf("a")); ok {
		t.Error("the refused bootstrap's token resolves")
	}

	// A second token with the same secret hash is refused.
	err, _ = fsmtest.Apply(t, f, 6, &fsmpb.ACLTokenSet{AccessorId: "dup", SecretHash: hashOf("o")}).(error)
	if !errors.Is(err, fsm.ErrACLConflict) {
		t.Errorf("token with a taken secret = %v, want ErrACLConflict", err)
	}

	// Deleting the policy drops its rules from the token; deleting the
	// token makes its secret unknown and moves the ACL index.
	fsmtest.Apply(t, f, 7, &fsmpb.ACLPolicyDelete{Name: "ops"})
	if _, rules, idx, _ := f.ACLResolve(hashOf("o")); len(rules) != 1 || idx != 7 {
		t.Errorf("after deleting ops: %d rules at ACL index %d, want 1 at 7", len(rules), idx)
	}
	fsmtest.Apply(t, f, 8, &fsmpb.ACLTokenDelete{AccessorId: "tok-orders"})
	if _, _, idx, ok := f.ACLResolve(hashOf("o")); ok || idx != 8 {
		t.Errorf("after delete: resolves %v at ACL index %d, want no token at 8", ok, idx)
	}
	for _, msg := range []proto.Message{&fsmpb.ACLTokenDelete{AccessorId: "tok-orders"}, &fsmpb.ACLPolicyDelete{Name: "ops"}} {
		if err, _ := fsmtest.Apply(t, f, 9, msg).(error); !errors.Is(err, fsm.ErrACLNotFound) {
			t.Errorf("deleting %v again = %v, want ErrACLNotFound", msg, err)
		}
	}
	if got := f.ACLIndex(); got != 8 {
		t.Errorf("ACLIndex after refused commands = %d, want 8", got)
	}
}

func TestACLSnapshotRoundTrip(t *testing.T) {
	f := aclFSM(t)
	g := fsmtest.SnapshotRestore(t, f)
	pols, _ := g.ACLPolicies()
	toks, _ := g.ACLTokens()
	if len(pols) != 2 || len(toks) != 2 {
		t.Fatalf("restored %d policies, %d tokens; want 2 and 2", len(pols), len(toks))
	}
	if tok, _, _, ok := g.ACLResolve(hashOf("o")); !ok || tok.Description != "orders app" {
		t.Errorf("restored token: %q, %v", tok.Description, ok)
	}
	// The bootstrapped flag survives: a second bootstrap is refused.
	if err, _ := fsmtest.Apply(t, g, 10, &fsmpb.ACLBootstrap{AccessorId: "x", SecretHash: hashOf("x")}).(error); !errors.Is(err, fsm.ErrACLBootstrapped) {
		t.Errorf("bootstrap after restore = %v, want ErrACLBootstrapped", err)
	}
	// A restore moves ACLIndex, even to the same ACL records, so that
	// caches of resolved tokens drop.
	if err := f.Restore(io.NopCloser(bytes.NewReader(fsmtest.Persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got := f.ACLIndex(); got <= 4 {
		t.Errorf("ACLIndex after restoring its own snapshot = %d, want > 4", got)
	}
}

// A version 1 snapshot, written before ACLs, restores with no ACL state.
func TestRestoreVersion1Snapshot(t *testing.T) {
	var buf bytes.Buffer
	if _, err := protodelim.MarshalTo(&buf, &fsmpb.SnapshotHeader{Version: 1, Index: 3, InstanceCount: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := protodelim.MarshalTo(&buf, &fsmpb.Instance{Service: "orders", Id: "a", State: 1}); err != nil {
		t.Fatal(err)
	}
	f := fsmtest.New(t, fsm.Config{})
	if err := f.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatalf("Restore(version 1) = %v", err)
	}
	if pols, _ := f.ACLPolicies(); len(pols) != 0 {
		t.Errorf("policies after a version 1 restore: %v", pols)
	}
	if res, ok := fsmtest.Apply(t, f, 4, &fsmpb.ACLBootstrap{AccessorId: "m", SecretHash: hashOf("m")}).(*fsm.ACLResult); !ok {
		t.Errorf("bootstrap after a version 1 restore = %v, want it applied", res)
	}
}

// prepare runs PrepareRestore of from's backup on target and restores the
// result into a new FSM.
func prepare(t *testing.T, from, target *fsm.FSM) *fsm.FSM {
	t.Helper()
	var saved, prepared bytes.Buffer
	if _, err := from.WriteSnapshot(&saved); err != nil {
		t.Fatal(err)
	}
	if _, err := target.PrepareRestore(&saved, 100, &prepared); err != nil {
		t.Fatal(err)
	}
	out := fsmtest.New(t, fsm.Config{})
	if err := out.Restore(io.NopCloser(&prepared)); err != nil {
		t.Fatal(err)
	}
	return out
}

// Backups carry the policies and tokens; a backup without ACL state keeps
// the target's, so that restoring it does not reopen the bootstrap.
func TestBackupACLs(t *testing.T) {
	withACL := aclFSM(t)
	empty := fsmtest.New(t, fsm.Config{})
	fsmtest.Apply(t, empty, 1, register("web", "w1", 1, 100))

	got := prepare(t, withACL, empty)
	if toks, _ := got.ACLTokens(); len(toks) != 2 {
		t.Errorf("a backup with ACLs restored %d tokens, want 2", len(toks))
	}

	got = prepare(t, empty, withACL)
	if toks, _ := got.ACLTokens(); len(toks) != 2 {
		t.Errorf("a backup without ACLs left %d tokens of the target, want 2", len(toks))
	}
	if err, _ := fsmtest.Apply(t, got, 200, &fsmpb.ACLBootstrap{AccessorId: "x", SecretHash: hashOf("x")}).(error); !errors.Is(err, fsm.ErrACLBootstrapped) {
		t.Errorf("bootstrap after restoring an ACL-less backup = %v, want ErrACLBootstrapped", err)
	}
	if ins, _ := got.Instances(); len(ins) != 1 || ins[0].Service != "web" {
		t.Errorf("instances after restoring the ACL-less backup: %v", ins)
	}
}
