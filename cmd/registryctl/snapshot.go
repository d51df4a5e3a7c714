package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

// chunkBytes is the data of one SnapshotChunk sent by restore.
const chunkBytes = 256 << 10

// snapshotHelp is the long help of the snapshot command.
const snapshotHelp = `A backup holds every registered instance (with its timing, incarnation and
last beat) as of a Raft index the leader had applied after a barrier. It does
not hold the cluster's membership: a backup restores into any cluster.

Restoring replaces the registry's contents on every node with exactly the
saved instances. Their clients re-register anything newer. Restored instances
keep the last-beat times of the backup, so the leader grants every instance
the failover grace again (--failover-grace plus its own beat interval) before
it may be suspected or removed: instances whose clients are still alive beat
again in time; the others expire then.`

func (c *cli) snapshotCmd() *cobra.Command {
	return group("snapshot", "Back up and restore the registry's contents", snapshotHelp, &cobra.Command{
		Use:   "save FILE",
		Short: "Write a backup of the registry to FILE (- for stdout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.save(cmd, args[0])
		},
	}, &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the registry's contents with the backup in FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.restore(cmd, args[0])
		},
	})
}

// save streams a backup into path, through a temporary file renamed into
// place once the whole stream arrived.
func (c *cli) save(cmd *cobra.Command, path string) error {
	var (
		out  io.Writer = c.stdout
		tmp  *os.File
		last *registryv1.SnapshotChunk
		size int64
	)
	if path != "-" {
		var err error
		if tmp, err = os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".part-*"); err != nil {
			return fail(err)
		}
		defer func() {
			tmp.Close()
			os.Remove(tmp.Name()) // gone already after the rename
		}()
		out = tmp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	err := c.each(ctx, func(ctx context.Context, cc *grpc.ClientConn) error {
		stream, err := cluster(cc).SnapshotSave(ctx, &registryv1.SnapshotSaveRequest{})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				if size > 0 { // part of it is written: not retried elsewhere
					return fmt.Errorf("the backup stream broke after %d bytes: %s", size, describe(err))
				}
				return err
			}
			n, err := out.Write(chunk.Data)
			size += int64(n)
			if err != nil {
				return err
			}
			last = chunk
		}
	})
	if err != nil {
		return err
	}
	if last == nil || len(last.Data) > 0 {
		return fail(errors.New("the backup stream ended without its last message: incomplete"))
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return fail(err)
		}
		if err := tmp.Close(); err != nil {
			return fail(err)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fail(err)
		}
	}
	if c.output == "json" && path != "-" {
		return c.printJSON(&registryv1.SnapshotChunk{Index: last.Index, Instances: last.Instances}, false)
	}
	report := c.stdout
	if path == "-" {
		report = c.stderr // stdout holds the backup
	}
	fmt.Fprintf(report, "saved %d instances at index %d to %s (%d bytes)\n", last.Instances, last.Index, path, size)
	return nil
}

// restore sends the backup in path to the leader.
func (c *cli) restore(cmd *cobra.Command, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if info.Size() > validate.MaxSnapshotBytes {
		return fail(fmt.Errorf("%s is %d bytes: a backup is at most %d", path, info.Size(), validate.MaxSnapshotBytes))
	}
	resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.SnapshotRestoreResponse, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		stream, err := cluster(cc).SnapshotRestore(ctx)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, chunkBytes)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if err := stream.Send(&registryv1.SnapshotChunk{Data: buf[:n]}); err != nil {
					break // the server ended the call: CloseAndRecv says why
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		return stream.CloseAndRecv()
	})
	if err != nil {
		return err
	}
	return c.print(resp, func(w io.Writer) {
		fmt.Fprintf(w, "restored %d instances from %s; the leader is at index %d\n", resp.Instances, path, resp.Index)
	})
}
