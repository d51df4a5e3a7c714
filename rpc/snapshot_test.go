package rpc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

// leaderAndFollower serves a leader (n1) and a follower (n2) that forwards
// to it, and returns Cluster clients of both and the follower's metrics.
func leaderAndFollower(t *testing.T, leader *fakeCluster, st *fakeState) (toLeader, toFollower registryv1.ClusterClient, followerMetrics *prometheus.Registry) {
	t.Helper()
	leader.leader = true
	_, lc := newTestConn(t, Config{NodeID: "n1", Applier: &fakeApplier{}, Cluster: leader, State: st})
	reg := prometheus.NewRegistry()
	_, fc := newTestConn(t, Config{NodeID: "n2", Applier: &fakeApplier{}, Cluster: &fakeCluster{conn: lc}, State: &fakeState{}, Metrics: NewMetrics(reg)})
	return registryv1.NewClusterClient(lc), registryv1.NewClusterClient(fc), reg
}

// save reads a whole SnapshotSave stream: the data and the last message.
func save(t *testing.T, c registryv1.ClusterClient) ([]byte, *registryv1.SnapshotChunk, int) {
	t.Helper()
	stream, err := c.SnapshotSave(t.Context(), &registryv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	var last *registryv1.SnapshotChunk
	messages := 0
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return data.Bytes(), last, messages
		}
		if err != nil {
			t.Fatalf("SnapshotSave: %v", err)
		}
		if len(chunk.Data) > snapshotChunkBytes {
			t.Errorf("chunk of %d bytes, the limit is %d", len(chunk.Data), snapshotChunkBytes)
		}
		data.Write(chunk.Data)
		last = chunk
		messages++
	}
}

func TestSnapshotSaveStreamsTheBackupInChunksThroughAnyNode(t *testing.T) {
	backup := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB: four chunks
	st := &fakeState{index: 77, backup: backup, instances: make([]fsm.Instance, 5)}
	toLeader, toFollower, reg := leaderAndFollower(t, &fakeCluster{}, st)
	for name, c := range map[string]registryv1.ClusterClient{"leader": toLeader, "follower": toFollower} {
		data, last, messages := save(t, c)
		if !bytes.Equal(data, backup) {
			t.Errorf("through the %s: got %d bytes, want the %d of the backup", name, len(data), len(backup))
		}
		if last.GetIndex() != 77 || last.GetInstances() != 5 || len(last.GetData()) != 0 {
			t.Errorf("through the %s: last message %v, want index 77 and 5 instances without data", name, last)
		}
		if messages != 5 {
			t.Errorf("through the %s: %d messages, want 4 chunks and the trailer", name, messages)
		}
	}
	if got := forwardedCount(t, reg, registryv1.Cluster_SnapshotSave_FullMethodName); got != 1 {
		t.Errorf("the follower counted %v forwarded SnapshotSave calls, want 1", got)
	}
}

// forwardedCount reads registry_forwarded_requests_total{method}.
func forwardedCount(t *testing.T, reg *prometheus.Registry, method string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "registry_forwarded_requests_total" && m.GetLabel()[0].GetValue() == method {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// restore sends data in chunks of chunk bytes and returns the answer.
func restore(t *testing.T, c registryv1.ClusterClient, data []byte, chunk int) (*registryv1.SnapshotRestoreResponse, error) {
	t.Helper()
	stream, err := c.SnapshotRestore(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += chunk {
		if err := stream.Send(&registryv1.SnapshotChunk{Data: data[i:min(len(data), i+chunk)]}); err != nil {
			break // the server ended the call: CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

func TestSnapshotRestoreReachesTheLeaderWithTheWholeBackup(t *testing.T) {
	backup := bytes.Repeat([]byte("abcdefgh"), 50_000)
	var got []byte
	leader := &fakeCluster{restore: func(r io.Reader) (fsm.SnapshotInfo, error) {
		var err error
		got, err = io.ReadAll(r)
		return fsm.SnapshotInfo{Index: 90, Instances: 12}, err
	}}
	toLeader, toFollower, _ := leaderAndFollower(t, leader, &fakeState{})
	for name, c := range map[string]registryv1.ClusterClient{"leader": toLeader, "follower": toFollower} {
		got = nil
		resp, err := restore(t, c, backup, 100_000)
		if err != nil {
			t.Fatalf("through the %s: %v", name, err)
		}
		if !bytes.Equal(got, backup) {
			t.Errorf("through the %s: the leader read %d bytes, want the %d sent", name, len(got), len(backup))
		}
		if resp.GetIndex() != 90 || resp.GetInstances() != 12 {
			t.Errorf("through the %s: answer %v, want index 90 and 12 instances", name, resp)
		}
	}
}

func TestABadBackupIsInvalidArgumentThroughAnyNode(t *testing.T) {
	leader := &fakeCluster{restore: func(r io.Reader) (fsm.SnapshotInfo, error) {
		io.Copy(io.Discard, r)
		return fsm.SnapshotInfo{}, fmt.Errorf("%w: header: unexpected EOF", fsm.ErrBadSnapshot)
	}}
	toLeader, toFollower, _ := leaderAndFollower(t, leader, &fakeState{})
	for name, c := range map[string]registryv1.ClusterClient{"leader": toLeader, "follower": toFollower} {
		if _, err := restore(t, c, []byte("garbage"), 3); status.Code(err) != codes.InvalidArgument {
			t.Errorf("through the %s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
}

func TestTheChunkReaderStopsAtTheLimit(t *testing.T) {
	chunks := [][]byte{[]byte("abcd"), []byte("efgh"), []byte("ij")}
	r := &chunkReader{limit: 9, recv: func() (*registryv1.SnapshotChunk, error) {
		if len(chunks) == 0 {
			return nil, io.EOF
		}
		c := chunks[0]
		chunks = chunks[1:]
		return &registryv1.SnapshotChunk{Data: c}, nil
	}}
	data, err := io.ReadAll(r)
	if string(data) != "abcdefgh" || status.Code((&Server{}).toStatus(err)) != codes.InvalidArgument {
		t.Errorf("ReadAll = %q, %v; want the first 8 bytes and INVALID_ARGUMENT for the chunk past 9", data, err)
	}
}
