package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// consistencies maps --consistency values to the API's.
var consistencies = map[string]registryv1.Consistency{
	"default":      registryv1.Consistency_CONSISTENCY_DEFAULT,
	"stale":        registryv1.Consistency_CONSISTENCY_STALE,
	"linearizable": registryv1.Consistency_CONSISTENCY_LINEARIZABLE,
}

func consistencyFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "consistency", "default",
		"default (the leader answers), stale (the node asked answers from its replica) or linearizable")
}

func parseConsistency(s string) (registryv1.Consistency, error) {
	c, ok := consistencies[s]
	if !ok {
		return 0, fmt.Errorf("--consistency %q: want default, stale or linearizable", s)
	}
	return c, nil
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// stateName is the lower-case name of an instance state.
func stateName(s registryv1.InstanceState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "INSTANCE_STATE_"))
}

// eventName is the name of an event type, e.g. REGISTERED.
func eventName(t registryv1.EventType) string { return strings.TrimPrefix(t.String(), "EVENT_TYPE_") }

func (c *cli) servicesCmd() *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the services with their healthy and suspect instance counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cons, err := parseConsistency(consistency)
			if err != nil {
				return err
			}
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ListServicesResponse, error) {
				return registry(cc).ListServices(ctx, &registryv1.ListServicesRequest{Consistency: cons})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				tw := newTable(w)
				fmt.Fprintln(tw, "SERVICE\tHEALTHY\tSUSPECT")
				for _, s := range resp.Services {
					fmt.Fprintf(tw, "%s\t%d\t%d\n", s.Service, s.Healthy, s.Suspect)
				}
				tw.Flush()
			})
		},
	}
	consistencyFlag(cmd, &consistency)
	return cmd
}

func (c *cli) instancesCmd() *cobra.Command {
	var (
		consistency string
		healthyOnly bool
	)
	cmd := &cobra.Command{
		Use:   "instances SERVICE",
		Short: "List the instances of a service: id, address, state, last beat age, incarnation",
		Long: `List the instances of a service, sorted by id, SUSPECT ones included
unless --healthy-only: id, address, state, the age of the last beat (by the
leader's clock against this machine's) and incarnation.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cons, err := parseConsistency(consistency)
			if err != nil {
				return err
			}
			// A large service comes in pages (each at most 3 MiB): gather them.
			req := &registryv1.GetServiceRequest{Service: args[0], Consistency: cons, IncludeSuspect: !healthyOnly}
			var resp *registryv1.GetServiceResponse
			for {
				page, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.GetServiceResponse, error) {
					return registry(cc).GetService(ctx, req)
				})
				if err != nil {
					return err
				}
				if resp == nil {
					resp = page
				} else {
					resp.Instances = append(resp.Instances, page.Instances...)
					resp.Index, resp.KnownLeader = page.Index, page.KnownLeader
				}
				if page.NextPageToken == "" {
					break
				}
				req.PageToken = page.NextPageToken
			}
			resp.NextPageToken = ""
			now := time.Now()
			return c.print(resp, func(w io.Writer) {
				tw := newTable(w)
				fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tLAST BEAT\tINCARNATION")
				for _, in := range resp.Instances {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%d\n", in.Id, in.Address, stateName(in.State),
						age(now, in.LastBeatAt.AsTime()), in.Incarnation)
				}
				tw.Flush()
			})
		},
	}
	consistencyFlag(cmd, &consistency)
	cmd.Flags().BoolVar(&healthyOnly, "healthy-only", false, "leave SUSPECT instances out")
	return cmd
}

// age formats now - t, rounded to what a person reads.
func age(now, t time.Time) string {
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func (c *cli) watchCmd() *cobra.Command {
	var after uint64
	cmd := &cobra.Command{
		Use:   "watch [SERVICE]",
		Short: "Follow the changes of a service (or of every service) until interrupted",
		Long: `Follow the changes of a service, or of every service without one, until
interrupted. The stream starts with a reset (the whole current set) unless
--after-index names an index the node still keeps events after. Each line is
an event, or a reset; with -o json each line is one WatchResponse. If the node
becomes unavailable, the watch resumes on the next endpoint after the last
index printed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &registryv1.WatchRequest{AfterIndex: after}
			if len(args) == 1 {
				req.Service = args[0]
			}
			return c.each(cmd.Context(), func(ctx context.Context, cc *grpc.ClientConn) error {
				stream, err := registry(cc).Watch(ctx, req)
				if err != nil {
					return err
				}
				for {
					msg, err := stream.Recv()
					if err != nil {
						if errors.Is(err, io.EOF) || ctx.Err() != nil {
							return nil // ended, or interrupted
						}
						return err
					}
					if err := c.printWatch(msg); err != nil {
						return err
					}
					if !msg.More {
						req.AfterIndex = msg.Index // where another endpoint resumes
					}
				}
			})
		},
	}
	cmd.Flags().Uint64Var(&after, "after-index", 0, "resume after this Raft index instead of starting with a reset")
	return cmd
}

func (c *cli) printWatch(msg *registryv1.WatchResponse) error {
	if c.output == "json" {
		return c.printJSON(msg, true)
	}
	if msg.IsReset {
		fmt.Fprintf(c.stdout, "%d RESET %d instances%s\n", msg.Index, len(msg.Instances), map[bool]string{true: " (more follow)"}[msg.More])
	} else if len(msg.Instances) > 0 {
		fmt.Fprintf(c.stdout, "%d RESET +%d instances%s\n", msg.Index, len(msg.Instances), map[bool]string{true: " (more follow)"}[msg.More])
	}
	for _, ev := range msg.Events {
		in := ev.Instance
		fmt.Fprintf(c.stdout, "%d %s %s/%s %s %s incarnation %d\n", ev.Index, eventName(ev.Type), in.Service, in.Id,
			in.Address, stateName(in.State), in.Incarnation)
	}
	return nil
}

func (c *cli) registerCmd() *cobra.Command {
	var (
		meta                      []string
		incarnation               uint64
		interval, suspectAfter, t time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register SERVICE ID ADDRESS",
		Short: "Register (or update) an instance: for scripts and tests",
		Long: `Register an instance, or update it: a registration is an upsert keyed by
service and id, and counts as a beat. Omitted timing takes the registry's
defaults (beat every 5s, suspect after 15s, removed after 30s). The instance
must then beat (registryctl beat, or its client library) or it expires.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := &registryv1.Instance{Service: args[0], Id: args[1], Address: args[2], Incarnation: incarnation}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--meta %q: want key=value", kv)
				}
				if in.Metadata == nil {
					in.Metadata = make(map[string]string)
				}
				in.Metadata[k] = v
			}
			for _, d := range []struct {
				v time.Duration
				p **durationpb.Duration
			}{{interval, &in.BeatInterval}, {suspectAfter, &in.SuspectAfter}, {t, &in.Ttl}} {
				if d.v != 0 {
					*d.p = durationpb.New(d.v)
				}
			}
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.RegisterResponse, error) {
				return registry(cc).Register(ctx, &registryv1.RegisterRequest{Instance: in})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				got := resp.Instance
				fmt.Fprintf(w, "registered %s/%s incarnation %d at index %d (beat every %v, suspect after %v, ttl %v)\n",
					got.Service, got.Id, got.Incarnation, resp.Index,
					got.BeatInterval.AsDuration(), got.SuspectAfter.AsDuration(), got.Ttl.AsDuration())
				if len(resp.BeatKey) > 0 { // a secret: for the UDP beat sender of this incarnation only
					fmt.Fprintf(w, "beat key (UDP beats, base64): %s\n", base64.StdEncoding.EncodeToString(resp.BeatKey))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&meta, "meta", nil, "metadata as key=value (repeatable)")
	f.Uint64Var(&incarnation, "incarnation", 0, "incarnation (0: the registry's default, 1)")
	f.DurationVar(&interval, "beat-interval", 0, "how often the instance beats (0: the registry's default)")
	f.DurationVar(&suspectAfter, "suspect-after", 0, "no beat for this long marks it SUSPECT (0: ttl / 2)")
	f.DurationVar(&t, "ttl", 0, "no beat for this long removes it (0: 6 × beat interval)")
	return cmd
}

func (c *cli) deregisterCmd() *cobra.Command {
	var incarnation uint64
	cmd := &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Remove an instance",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.DeregisterResponse, error) {
				return registry(cc).Deregister(ctx, &registryv1.DeregisterRequest{Service: args[0], Id: args[1], Incarnation: incarnation})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				fmt.Fprintf(w, "deregistered %s/%s at index %d\n", args[0], args[1], resp.Index)
			})
		},
	}
	cmd.Flags().Uint64Var(&incarnation, "incarnation", 0, "remove only this incarnation (0: whichever is registered)")
	return cmd
}

func (c *cli) beatCmd() *cobra.Command {
	var incarnation uint64
	cmd := &cobra.Command{
		Use:   "beat SERVICE ID",
		Short: "Beat once for an instance; exits 1 if the beat is rejected",
		Long: `Beat once for an instance and wait for the beat to be committed. A beat for
an instance that is not registered, or registered with another incarnation,
is rejected: registryctl says why and exits 1.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := &registryv1.InstanceRef{Service: args[0], Id: args[1], Incarnation: incarnation}
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.BeatResponse, error) {
				return registry(cc).Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{ref}})
			})
			if err != nil {
				return err
			}
			if err := c.print(resp, func(w io.Writer) {
				if len(resp.Rejected) == 0 {
					fmt.Fprintf(w, "beat %s/%s at index %d\n", ref.Service, ref.Id, resp.Index)
				}
			}); err != nil {
				return err
			}
			if len(resp.Rejected) > 0 {
				rj := resp.Rejected[0]
				why := "not registered"
				if rj.Reason == registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED {
					why = fmt.Sprintf("incarnation %d is registered", rj.CurrentIncarnation)
				}
				return fail(fmt.Errorf("beat for %s/%s incarnation %d rejected: %s", ref.Service, ref.Id, ref.Incarnation, why))
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&incarnation, "incarnation", 1, "the incarnation registered")
	return cmd
}
