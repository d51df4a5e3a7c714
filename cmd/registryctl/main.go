// Command registryctl inspects and operates a registry cluster over its
// gRPC API: services and instances, watches, registrations for scripts, the
// Raft cluster, the mass-expiry guard, and backups. See registryctl --help.
//
// Exit statuses: 0 success; 1 the operation failed (an error from the
// registry, no endpoint reachable, a rejected beat); 2 a usage error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// endpointsEnv holds the default --endpoints.
const endpointsEnv = "REGISTRY_ENDPOINTS"

// tokenEnv holds the default --token.
const tokenEnv = "REGISTRY_TOKEN"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// failure is an error of the operation itself (exit 1); any other error
// from the command line is a usage error (exit 2).
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

func fail(err error) error {
	if err == nil {
		return nil
	}
	return failure{err}
}

// run runs one command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := c.commands()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	c.close()
	var f failure
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &f):
		fmt.Fprintf(stderr, "registryctl: %s\n", describe(f.err))
		return exitFailure
	default:
		fmt.Fprintf(stderr, "registryctl: %v\nSee '%s --help'.\n", err, cmd.CommandPath())
		return exitUsage
	}
}

// describe formats an error for the terminal: a gRPC status as its code
// name and message.
func describe(err error) string {
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
		return codeName(st.Code()) + ": " + st.Message()
	}
	return err.Error()
}

// codeName is the canonical name of a code, e.g. INVALID_ARGUMENT.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// cli holds the global flags and the connections of one run.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	endpoints []string
	output    string
	timeout   time.Duration
	token     string

	tlsFiles tlsFiles
	creds    credentials.TransportCredentials

	conns map[string]*grpc.ClientConn
}

func (c *cli) commands() *cobra.Command {
	var endpoints string
	root := &cobra.Command{
		Use:   "registryctl",
		Short: "Operate a registry cluster",
		Long: `registryctl inspects and operates a registry cluster over its gRPC API.

It talks to the nodes in --endpoints (or $` + endpointsEnv + `), trying each in
turn while they answer UNAVAILABLE. Any node serves any command: writes and
cluster changes are forwarded to the leader.

Exit status: 0 success; 1 the operation failed (an error from the registry,
no endpoint reachable, a rejected beat); 2 a usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("endpoints") {
				if v := os.Getenv(endpointsEnv); v != "" {
					endpoints = v
				}
			}
			if !cmd.Flags().Changed("token") {
				c.token = os.Getenv(tokenEnv)
			}
			c.endpoints = nil
			for _, e := range strings.Split(endpoints, ",") {
				if e = strings.TrimSpace(e); e != "" {
					c.endpoints = append(c.endpoints, e)
				}
			}
			if len(c.endpoints) == 0 {
				return errors.New("--endpoints: no endpoint given")
			}
			if c.output != "table" && c.output != "json" {
				return fmt.Errorf("--output %q: want table or json", c.output)
			}
			if c.timeout <= 0 {
				return fmt.Errorf("--timeout %v: must be positive", c.timeout)
			}
			return c.setupTLS(cmd)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	pf := root.PersistentFlags()
	pf.StringVar(&endpoints, "endpoints", "127.0.0.1:7001", "comma-separated gRPC addresses of registry nodes (env "+endpointsEnv+")")
	pf.StringVarP(&c.output, "output", "o", "table", "output format: table or json (proto field names)")
	pf.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on each call (not on watch)")
	c.tlsFiles.addFlags(root)
	pf.StringVar(&c.token, "token", "", "ACL token secret sent as the bearer on every call (env "+tokenEnv+")")

	root.AddCommand(c.servicesCmd(), c.instancesCmd(), c.watchCmd(), c.registerCmd(), c.deregisterCmd(), c.beatCmd(),
		c.clusterCmd(), c.guardCmd(), c.snapshotCmd(), c.tlsCmd(), c.aclCmd())
	return root
}

// conn returns the (lazily dialled) connection to an endpoint.
func (c *cli) conn(endpoint string) (*grpc.ClientConn, error) {
	if cc, ok := c.conns[endpoint]; ok {
		return cc, nil
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(c.creds)}
	if c.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(c.token)))
	}
	cc, err := grpc.NewClient(endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	if c.conns == nil {
		c.conns = make(map[string]*grpc.ClientConn)
	}
	c.conns[endpoint] = cc
	return cc, nil
}

func (c *cli) close() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

// each calls fn with a connection to each endpoint in turn until one does
// not answer UNAVAILABLE, and returns that answer (or the last UNAVAILABLE,
// naming every endpoint tried).
func (c *cli) each(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	var err error
	for _, e := range c.endpoints {
		var cc *grpc.ClientConn
		if cc, err = c.conn(e); err != nil {
			return fail(err)
		}
		if err = fn(ctx, cc); status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return fail(err)
		}
	}
	if len(c.endpoints) > 1 {
		st := status.Convert(err)
		err = status.Errorf(codes.Unavailable, "every endpoint (%s) is unavailable; the last said: %s",
			strings.Join(c.endpoints, ", "), st.Message())
	}
	return fail(err)
}

// unary runs a call bounded by --timeout on the endpoints in turn.
func unary[Resp any](cmd *cobra.Command, c *cli, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	var resp Resp
	err := c.each(ctx, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = call(ctx, cc)
		return err
	})
	return resp, err
}

// printJSON writes msg as JSON with proto field names, as the HTTP API
// does: indented, or on one line if compact.
func (c *cli) printJSON(msg proto.Message, compact bool) error {
	out, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return fail(err)
	}
	// Re-indent: protojson varies its spacing on purpose; scripts and
	// people prefer a stable form.
	var buf bytes.Buffer
	if compact {
		err = json.Compact(&buf, out)
	} else {
		err = json.Indent(&buf, out, "", "  ")
	}
	if err != nil {
		return fail(err)
	}
	buf.WriteByte('\n')
	_, err = c.stdout.Write(buf.Bytes())
	return fail(err)
}

// print writes msg as JSON with -o json, and calls table otherwise.
func (c *cli) print(msg proto.Message, table func(w io.Writer)) error {
	if c.output == "json" {
		return c.printJSON(msg, false)
	}
	table(c.stdout)
	return nil
}

// registry and cluster return the clients of a connection.
func registry(cc *grpc.ClientConn) registryv1.RegistryClient { return registryv1.NewRegistryClient(cc) }
func cluster(cc *grpc.ClientConn) registryv1.ClusterClient   { return registryv1.NewClusterClient(cc) }

// bearerToken sends --token on every call, over plaintext too (the
// registry's connections are plaintext; see client.Config.Token).
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }
