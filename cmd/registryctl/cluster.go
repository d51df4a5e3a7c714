package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// group is a command that only holds subcommands: alone, it shows its help.
func group(use, short, long string, subcommands ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(subcommands...)
	return cmd
}

// fields prints name: value lines, aligned.
func fields(w io.Writer, kvs ...[2]any) {
	tw := newTable(w)
	for _, kv := range kvs {
		fmt.Fprintf(tw, "%s:\t%v\n", kv[0], kv[1])
	}
	tw.Flush()
}

func (c *cli) clusterCmd() *cobra.Command {
	return group("cluster", "Inspect and change the Raft cluster", "", &cobra.Command{
		Use:   "status",
		Short: "Describe the node answering and the cluster as it sees it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.status(cmd)
			if err != nil {
				return err
			}
			return c.print(st, func(w io.Writer) {
				fields(w,
					[2]any{"node", st.NodeId},
					[2]any{"role", st.Role},
					[2]any{"term", st.Term},
					[2]any{"leader", orNone(st.LeaderId)},
					[2]any{"leader grpc", orNone(st.LeaderGrpcAddress)},
					[2]any{"leader http", orNone(st.LeaderHttpAddress)},
					[2]any{"applied index", st.AppliedIndex},
					[2]any{"commit index", st.CommitIndex},
					[2]any{"last log index", st.LastLogIndex},
					[2]any{"members", len(st.Members)},
					[2]any{"clock skew", st.ClockSkew.AsDuration()})
			})
		},
	}, &cobra.Command{
		Use:   "members",
		Short: "List the members of the Raft configuration, their roles and how far each lags",
		Long: `List the members of the Raft configuration. ROLE is voter, or replica for a
read replica (a Raft non-voter: it serves reads, watches and beats but never
votes or leads). LAG is how many entries the leader has committed that the
member has not applied yet, asked of each member at its gRPC address ("-"
when it does not answer). With -o json: Cluster.Status's answer, each member
with a "lag" (absent when it does not answer).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.status(cmd)
			if err != nil {
				return err
			}
			lags := c.lags(cmd, st)
			if c.output == "json" {
				return c.printMembersJSON(st, lags)
			}
			return c.print(st, func(w io.Writer) {
				tw := newTable(w)
				fmt.Fprintln(tw, "ID\tRAFT\tGRPC\tHTTP\tROLE\tLEADER\tLAG")
				for _, m := range st.Members {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\n", m.Id, m.RaftAddress, orNone(m.GrpcAddress), orNone(m.HttpAddress), m.Role, m.Leader, lags[m.Id])
				}
				tw.Flush()
			})
		},
	}, &cobra.Command{
		Use:   "promote NODE",
		Short: "Make the read replica NODE a voter",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.PromoteResponse, error) {
				return cluster(cc).Promote(ctx, &registryv1.PromoteRequest{NodeId: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) { fmt.Fprintf(w, "%s is a voter at index %d\n", args[0], resp.Index) })
		},
	}, &cobra.Command{
		Use:   "demote NODE",
		Short: "Make the voter NODE a read replica",
		Long: `Make the voter NODE a read replica (a Raft non-voter). Refused
(FAILED_PRECONDITION) for the leader (transfer leadership first) and when
fewer than three voters would remain.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.DemoteResponse, error) {
				return cluster(cc).Demote(ctx, &registryv1.DemoteRequest{NodeId: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) { fmt.Fprintf(w, "%s is a read replica at index %d\n", args[0], resp.Index) })
		},
	}, &cobra.Command{
		Use:   "transfer-leader [NODE]",
		Short: "Hand leadership to NODE, or to any other voter",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &registryv1.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.NodeId = args[0]
			}
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.TransferLeadershipResponse, error) {
				return cluster(cc).TransferLeadership(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) { fmt.Fprintf(w, "leader is now %s\n", resp.LeaderId) })
		},
	}, &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove NODE from the Raft configuration",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.RemoveResponse, error) {
				return cluster(cc).Remove(ctx, &registryv1.RemoveRequest{NodeId: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) { fmt.Fprintf(w, "removed %s at index %d\n", args[0], resp.Index) })
		},
	})
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// status asks the first endpoint that answers.
func (c *cli) status(cmd *cobra.Command) (*registryv1.StatusResponse, error) {
	return unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.StatusResponse, error) {
		return cluster(cc).Status(ctx, &registryv1.StatusRequest{})
	})
}

// errNoLeader: the answering node knows no leader.
var errNoLeader = errors.New("no leader is known: the cluster has no quorum, or is electing one")

// leaderStatus asks a node for the leader, then the leader for its Status:
// the expiry checker and its guard run there only.
func (c *cli) leaderStatus(cmd *cobra.Command) (*registryv1.StatusResponse, error) {
	st, err := c.status(cmd)
	if err != nil {
		return nil, err
	}
	if st.LeaderId == st.NodeId {
		return st, nil
	}
	if st.LeaderGrpcAddress == "" {
		return nil, fail(errNoLeader)
	}
	cc, err := c.conn(st.LeaderGrpcAddress)
	if err != nil {
		return nil, fail(err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	st, err = cluster(cc).Status(ctx, &registryv1.StatusRequest{})
	return st, fail(err)
}

// guardHelp is the long help of the guard command.
const guardHelp = `The mass-expiry guard holds expiries back when too many instances would
expire at once (a network fault cuts many beats): they are marked SUSPECT
instead. It clears by itself when beats recover; if the instances really are
gone, "guard override" lets the held expiries go.`

func (c *cli) guardCmd() *cobra.Command {
	return group("guard", "Inspect or release the mass-expiry guard", guardHelp, &cobra.Command{
		Use:   "status",
		Short: "Show the guard's state, from the leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.leaderStatus(cmd)
			if err != nil {
				return err
			}
			return c.print(st, func(w io.Writer) {
				fields(w,
					[2]any{"leader", st.NodeId},
					[2]any{"checker running", st.CheckerRunning},
					[2]any{"guard engaged", st.ExpiryGuardEngaged},
					[2]any{"expiries held", st.ExpiriesHeld},
					[2]any{"released by an operator", st.ExpiryGuardReleased},
					[2]any{"failover fence remaining", st.FailoverFenceRemaining.AsDuration()})
			})
		},
	}, &cobra.Command{
		Use:   "override",
		Short: "Release the guard: let the held expiries go (Cluster.ReleaseExpiryGuard)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ReleaseExpiryGuardResponse, error) {
				return cluster(cc).ReleaseExpiryGuard(ctx, &registryv1.ReleaseExpiryGuardRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				if resp.WasEngaged {
					fmt.Fprintf(w, "released the guard: %d held expiries may go\n", resp.Held)
				} else {
					fmt.Fprintln(w, "the guard was not engaged: nothing to release")
				}
			})
		},
	})
}

// lags asks every member of st with a gRPC address for its applied index,
// at once and bounded by --timeout, and returns each member's lag behind
// the leader's commit index (the highest commit index any member reports
// when the leader does not answer), "-" for a member that does not answer.
func (c *cli) lags(cmd *cobra.Command, st *registryv1.StatusResponse) map[string]string {
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	answers := make([]*registryv1.StatusResponse, len(st.Members))
	var wg sync.WaitGroup
	for i, m := range st.Members {
		if m.GrpcAddress == "" {
			continue
		}
		cc, err := c.conn(m.GrpcAddress)
		if err != nil {
			continue
		}
		wg.Go(func() {
			answers[i], _ = cluster(cc).Status(ctx, &registryv1.StatusRequest{})
		})
	}
	wg.Wait()
	var ref uint64
	for i, m := range st.Members {
		if a := answers[i]; a != nil && m.Leader {
			ref = a.CommitIndex
			break
		} else if a != nil {
			ref = max(ref, a.CommitIndex)
		}
	}
	out := make(map[string]string, len(st.Members))
	for i, m := range st.Members {
		switch a := answers[i]; {
		case a == nil:
			out[m.Id] = "-"
		case a.AppliedIndex >= ref:
			out[m.Id] = "0"
		default:
			out[m.Id] = strconv.FormatUint(ref-a.AppliedIndex, 10)
		}
	}
	return out
}

// printMembersJSON prints st as JSON (as -o json does) with each member's
// lag added as "lag" (a string, as JSON carries the API's uint64s), left out
// for a member that did not answer.
func (c *cli) printMembersJSON(st *registryv1.StatusResponse, lags map[string]string) error {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(st)
	if err != nil {
		return fail(err)
	}
	var doc structpb.Struct
	if err := protojson.Unmarshal(raw, &doc); err != nil {
		return fail(err)
	}
	for _, m := range doc.Fields["members"].GetListValue().GetValues() {
		fields := m.GetStructValue().GetFields()
		if lag := lags[fields["id"].GetStringValue()]; lag != "" && lag != "-" {
			fields["lag"] = structpb.NewStringValue(lag)
		}
	}
	return c.printJSON(&doc, false)
}
