package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

func aclClient(cc *grpc.ClientConn) registryv1.ACLClient { return registryv1.NewACLClient(cc) }

// printSecret prints a new token: the only time its secret is shown.
func (c *cli) printSecret(tok *registryv1.ACLTokenSecret) error {
	return c.print(tok, func(w io.Writer) {
		fields(w, [2]any{"accessor id", tok.AccessorId}, [2]any{"secret id", tok.SecretId})
	})
}

func (c *cli) aclCmd() *cobra.Command {
	bootstrap := &cobra.Command{
		Use:   "bootstrap",
		Short: "Create the first management token (once per cluster) and print its secret",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ACLTokenSecret, error) {
				return aclClient(cc).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
			})
			if err != nil {
				return err
			}
			return c.printSecret(tok)
		},
	}
	return group("acl", "Manage ACL policies and tokens", "", bootstrap, c.aclPolicyCmd(), c.aclTokenCmd())
}

func (c *cli) aclPolicyCmd() *cobra.Command {
	var name, rulesFile string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create or replace a policy from a rules file (HCL or JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || rulesFile == "" {
				return errors.New("--name and --rules are required")
			}
			rules, err := os.ReadFile(rulesFile)
			if err != nil {
				return fail(err)
			}
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ACLPolicyCreateResponse, error) {
				return aclClient(cc).PolicyCreate(ctx, &registryv1.ACLPolicyCreateRequest{Name: name, Rules: string(rules)})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) { fmt.Fprintf(w, "policy %s written at index %d\n", name, resp.Index) })
		},
	}
	create.Flags().StringVar(&name, "name", "", "policy name")
	create.Flags().StringVar(&rulesFile, "rules", "", "file holding the policy's rules")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ACLPolicyListResponse, error) {
				return aclClient(cc).PolicyList(ctx, &registryv1.ACLPolicyListRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				for _, p := range resp.Policies {
					fmt.Fprintf(w, "%s:\n%s\n", p.Name, strings.TrimRight(p.Rules, "\n"))
				}
			})
		},
	}
	del := c.aclDeleteCmd("policy", "NAME", func(ctx context.Context, cl registryv1.ACLClient, name string) (uint64, error) {
		resp, err := cl.PolicyDelete(ctx, &registryv1.ACLPolicyDeleteRequest{Name: name})
		return resp.GetIndex(), err
	})
	return group("policy", "Manage ACL policies", "", create, list, del)
}

func (c *cli) aclTokenCmd() *cobra.Command {
	var policies []string
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token holding policies and print its secret (shown only now)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ACLTokenSecret, error) {
				return aclClient(cc).TokenCreate(ctx, &registryv1.ACLTokenCreateRequest{Policies: policies, Description: description})
			})
			if err != nil {
				return err
			}
			return c.printSecret(tok)
		},
	}
	create.Flags().StringSliceVar(&policies, "policy", nil, "policy the token holds (repeatable)")
	create.Flags().StringVar(&description, "description", "", "what the token is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (*registryv1.ACLTokenListResponse, error) {
				return aclClient(cc).TokenList(ctx, &registryv1.ACLTokenListRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) {
				tw := newTable(w)
				fmt.Fprintln(tw, "ACCESSOR\tPOLICIES\tMANAGEMENT\tDESCRIPTION")
				for _, t := range resp.Tokens {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", t.AccessorId, orNone(strings.Join(t.Policies, ",")), t.Management, t.Description)
				}
				tw.Flush()
			})
		},
	}
	del := c.aclDeleteCmd("token", "ACCESSOR_ID", func(ctx context.Context, cl registryv1.ACLClient, id string) (uint64, error) {
		resp, err := cl.TokenDelete(ctx, &registryv1.ACLTokenDeleteRequest{AccessorId: id})
		return resp.GetIndex(), err
	})
	return group("token", "Manage ACL tokens", "", create, list, del)
}

// aclDeleteCmd is "delete ARG" for a policy or a token.
func (c *cli) aclDeleteCmd(kind, arg string, call func(context.Context, registryv1.ACLClient, string) (uint64, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "delete " + arg,
		Short: "Delete a " + kind,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			index, err := unary(cmd, c, func(ctx context.Context, cc *grpc.ClientConn) (uint64, error) {
				return call(ctx, aclClient(cc), args[0])
			})
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(&registryv1.ACLTokenDeleteResponse{Index: index}, false)
			}
			_, err = fmt.Fprintf(c.stdout, "%s %s deleted at index %d\n", kind, args[0], index)
			return fail(err)
		},
	}
}
