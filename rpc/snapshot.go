package rpc

import (
	"bufio"
	"errors"
	"io"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

// snapshotChunkBytes is the size of the data of one SnapshotChunk sent.
const snapshotChunkBytes = 256 << 10

// SnapshotSave implements registry.v1.Cluster. The leader confirms its
// leadership and applies everything committed before the call (a read
// barrier), then streams its state in the snapshot format; a follower
// relays the leader's stream.
func (s *Server) SnapshotSave(req *registryv1.SnapshotSaveRequest, stream grpc.ServerStreamingServer[registryv1.SnapshotChunk]) error {
	ctx := stream.Context()
	if !s.cluster.IsLeader() {
		ctx, conn, err := s.forwardOnce(ctx, registryv1.Cluster_SnapshotSave_FullMethodName)
		if err != nil {
			return s.toStatus(err)
		}
		from, err := registryv1.NewClusterClient(conn).SnapshotSave(ctx, req)
		if err != nil {
			return s.toStatus(err)
		}
		for {
			chunk, err := from.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return s.toStatus(err)
			}
			if err := stream.Send(chunk); err != nil {
				return err
			}
		}
	}
	if err := s.cluster.ReadBarrier(ctx); err != nil {
		return s.toStatus(err)
	}
	w := bufio.NewWriterSize(chunkWriter(func(data []byte) error {
		return stream.Send(&registryv1.SnapshotChunk{Data: data})
	}), snapshotChunkBytes)
	info, err := s.state.WriteSnapshot(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return s.toStatus(err)
	}
	s.log.Info("backup streamed", "index", info.Index, "instances", info.Instances)
	return stream.Send(&registryv1.SnapshotChunk{Index: info.Index, Instances: uint64(info.Instances)})
}

// chunkWriter sends what is written as SnapshotChunk data, at most
// snapshotChunkBytes per message.
type chunkWriter func([]byte) error

func (w chunkWriter) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i += snapshotChunkBytes {
		if err := w(p[i:min(len(p), i+snapshotChunkBytes)]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// SnapshotRestore implements registry.v1.Cluster. The leader reads the whole
// backup (at most validate.MaxSnapshotBytes), checks it and installs it
// through Raft; a follower relays the stream to the leader.
func (s *Server) SnapshotRestore(stream grpc.ClientStreamingServer[registryv1.SnapshotChunk, registryv1.SnapshotRestoreResponse]) error {
	ctx := stream.Context()
	if !s.cluster.IsLeader() {
		ctx, conn, err := s.forwardOnce(ctx, registryv1.Cluster_SnapshotRestore_FullMethodName)
		if err != nil {
			return s.toStatus(err)
		}
		to, err := registryv1.NewClusterClient(conn).SnapshotRestore(ctx)
		if err != nil {
			return s.toStatus(err)
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if err := to.Send(chunk); err != nil {
				if !errors.Is(err, io.EOF) {
					return s.toStatus(err)
				}
				break // the leader ended the call: CloseAndRecv says why
			}
		}
		resp, err := to.CloseAndRecv()
		if err != nil {
			return s.toStatus(err)
		}
		return stream.SendAndClose(resp)
	}
	info, err := s.admin.RestoreSnapshot(ctx, &chunkReader{recv: stream.Recv, limit: validate.MaxSnapshotBytes})
	if err != nil {
		return s.toStatus(err)
	}
	return stream.SendAndClose(&registryv1.SnapshotRestoreResponse{Index: info.Index, Instances: uint64(info.Instances)})
}

// chunkReader reads the data of a SnapshotChunk stream until the client
// half-closes it, and fails once more than limit bytes came.
type chunkReader struct {
	recv  func() (*registryv1.SnapshotChunk, error)
	limit int64
	total int64
	buf   []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		chunk, err := r.recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		r.total += int64(len(chunk.GetData()))
		if r.total > r.limit {
			return 0, validate.FieldErrorf("data", "the backup is larger than the limit of %d bytes", r.limit)
		}
		r.buf = chunk.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
