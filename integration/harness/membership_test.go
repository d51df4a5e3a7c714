package harness

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fake node answers Status without members, so AddNode starts the node
// on the spare slot but never sees it join; the membership itself is
// exercised against registry-node by the integration suite.
func TestAddNodeTakesTheSpareSlotAndJoinsThroughAMember(t *testing.T) {
	c := Start(t, Options{
		Binary:        fakeNode(t),
		Nodes:         2,
		Spare:         1,
		LeaderTimeout: 200 * time.Millisecond,
		ApplyTimeout:  200 * time.Millisecond,
	})
	n1 := c.Node("n1")
	if _, err := c.WaitLeader(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := c.AddNode(t.Context())
	if err == nil || !strings.Contains(err.Error(), "does not list n3") {
		t.Fatalf("AddNode with a fake node: %v, want an error saying the configuration does not list n3", err)
	}
	n3 := c.Node("n3")
	if n3 == nil || !n3.Running() {
		t.Fatalf("n3 = %v after AddNode, want a running node", n3)
	}
	if got := ids(c.Nodes()); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Errorf("Nodes = %v, want [n1 n2 n3]", got)
	}
	args := n3.Args()
	if !slices.Contains(args, "--join="+n1.GRPCAddr()) || slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--bootstrap-peers")
	}) {
		t.Errorf("n3's args %v: want --join=%s and no --bootstrap-peers", args, n1.GRPCAddr())
	}
	if want := hostPort(c.IP(), grpcPortBase+3); n3.GRPCAddr() != want {
		t.Errorf("n3 serves gRPC on %s, want the third slot %s", n3.GRPCAddr(), want)
	}

	if _, err := c.AddNode(t.Context()); !errors.Is(err, ErrNoSpareSlot) {
		t.Errorf("AddNode past the spare slots: %v, want ErrNoSpareSlot", err)
	}
	if got := ids(c.Nodes()); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Errorf("Nodes after a refused AddNode = %v, want [n1 n2 n3]", got)
	}
}
