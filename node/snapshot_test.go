package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

// saveBackup reads a whole SnapshotSave stream.
func saveBackup(t *testing.T, cl registryv1.ClusterClient) ([]byte, *registryv1.SnapshotChunk) {
	t.Helper()
	stream, err := cl.SnapshotSave(t.Context(), &registryv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	var last *registryv1.SnapshotChunk
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return data.Bytes(), last
		}
		if err != nil {
			t.Fatalf("SnapshotSave: %v", err)
		}
		data.Write(chunk.Data)
		last = chunk
	}
}

func restoreBackup(t *testing.T, cl registryv1.ClusterClient, data []byte) (*registryv1.SnapshotRestoreResponse, error) {
	t.Helper()
	stream, err := cl.SnapshotRestore(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += 1000 {
		if err := stream.Send(&registryv1.SnapshotChunk{Data: data[i:min(len(data), i+1000)]}); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

// ids lists "service/id" of the instances of services on node i, from its
// replica.
func idsOn(c *nodetest.Cluster, i int, services ...string) []string {
	var out []string
	for _, s := range services {
		ins, _ := c.Nodes[i].FSM().GetService(s, true)
		for _, in := range ins {
			out = append(out, in.Service+"/"+in.ID)
		}
	}
	return out
}

func TestABackupRestoredThroughAFollowerReplacesTheContentsOnEveryNode(t *testing.T) {
	c := nodetest.New(t, 3, nil)
	leader := c.Leader()
	follower := (leader + 1) % 3
	reg, cl := c.Registry(follower), registryv1.NewClusterClient(c.Conns[follower])
	ctx := t.Context()
	register := func(service, id string) {
		t.Helper()
		in := &registryv1.Instance{Service: service, Id: id, Address: "10.0.0.1:80", Ttl: durationpb.New(time.Hour), BeatInterval: durationpb.New(time.Minute)}
		if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}
	register("orders", "o1")
	register("orders", "o2")
	register("pay", "p1")

	backup, last := saveBackup(t, cl)
	if last.GetInstances() != 3 || last.GetIndex() == 0 {
		t.Fatalf("SnapshotSave's last message %v, want 3 instances and an index", last)
	}

	// Things change after the backup.
	if _, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "o1"}); err != nil {
		t.Fatal(err)
	}
	register("pay", "p2")
	w, err := reg.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := w.Recv(); err != nil || !msg.IsReset {
		t.Fatalf("watch start: %v, %v", msg, err)
	}
	before := c.Nodes[follower].FSM().AppliedIndex()

	resp, err := restoreBackup(t, cl, backup)
	if err != nil {
		t.Fatalf("SnapshotRestore: %v", err)
	}
	if resp.GetInstances() != 3 || resp.GetIndex() <= before {
		t.Errorf("SnapshotRestore answered %v; want 3 instances at an index past %d", resp, before)
	}
	want := []string{"orders/o1", "orders/o2", "pay/p1"}
	for i := range c.Nodes {
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			if diff := cmp.Diff(want, idsOn(c, i, "orders", "pay")); diff != "" {
				return fmt.Errorf("n%d after the restore (-want +got):\n%s", i+1, diff)
			}
			return nil
		})
	}
	// The watcher saw changes before the restore: it gets a reset, never a gap.
	for {
		msg, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.IsReset {
			break
		}
		if len(msg.Events) == 0 {
			t.Fatalf("watch message without events or reset: %v", msg)
		}
	}
	// The cluster's own addresses survived: the leader is still reachable.
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "pay", Id: "p3", Address: "h:1"}}); err != nil {
		t.Errorf("register through the follower after the restore: %v", err)
	}
}

func TestARestoredInstanceGetsTheFailoverGraceNotAnInstantExpiry(t *testing.T) {
	c := nodetest.New(t, 3, nil) // failover grace 1s
	leader := c.Leader()
	reg, cl := c.Registry(leader), registryv1.NewClusterClient(c.Conns[leader])
	in := &registryv1.Instance{Service: "orders", Id: "o1", Address: "10.0.0.1:80",
		BeatInterval: durationpb.New(100 * time.Millisecond), SuspectAfter: durationpb.New(200 * time.Millisecond), Ttl: durationpb.New(300 * time.Millisecond)}
	if _, err := reg.Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	backup, _ := saveBackup(t, cl)
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if _, ok := c.Nodes[leader].FSM().Instance("orders", "o1"); ok {
			return errors.New("not expired yet")
		}
		return nil
	})

	// Restored, its last beat is long past its TTL: without the grace the
	// next sweep (every 20ms) would expire it.
	restoring := time.Now()
	if _, err := restoreBackup(t, cl, backup); err != nil {
		t.Fatal(err)
	}
	w, err := reg.Watch(t.Context(), &registryv1.WatchRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msg.Events {
			if ev.Type != registryv1.EventType_EVENT_TYPE_EXPIRED {
				continue
			}
			if after := ev.At.AsTime().Sub(restoring); after < time.Second {
				t.Errorf("expired %v after the restore began, inside the grace of 1s + its interval", after)
			}
			return
		}
	}
}

func TestABadBackupChangesNothing(t *testing.T) {
	c := nodetest.New(t, 3, nil)
	leader := c.Leader()
	in := &registryv1.Instance{Service: "orders", Id: "o1", Address: "10.0.0.1:80"}
	if _, err := c.Registry(leader).Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	cl := registryv1.NewClusterClient(c.Conns[(leader+1)%3])
	backup, _ := saveBackup(t, cl)
	for name, data := range map[string][]byte{
		"truncated": backup[:len(backup)-2],
		"garbage":   []byte("definitely not a backup"),
	} {
		_, err := restoreBackup(t, cl, data)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s backup: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if got := idsOn(c, leader, "orders"); len(got) != 1 {
		t.Errorf("after refused restores the leader holds %v, want orders/o1", got)
	}
}
