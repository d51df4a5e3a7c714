package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// ACL clusters (Options.ACL).
//
// The nodes need a token with operator:write (--acl-token) to publish their
// addresses before any token exists. The harness resolves this as an
// operator would with Consul's BootstrapSecret: it makes the management
// secret itself (acl.NewSecret, a random UUID), starts every node with it
// as its token (REGISTRY_ACL_TOKEN, not a flag, so that it does not show in
// the process list), and, once a leader exists, bootstraps the ACLs with
// that chosen secret (ACL.Bootstrap's secret_id: the leader proposes only
// its hash, as for a secret it makes). Until the bootstrap is applied on a
// node, the node refuses its own publication and the harness's Status
// calls; the harness bootstraps before it waits for the nodes to answer.

// aclTokenEnv is the environment variable registry-node reads --acl-token
// from.
const aclTokenEnv = "REGISTRY_ACL_TOKEN"

// bearerCreds adds "authorization: Bearer <secret>" to every call of a
// connection. The harness talks to 127.0.0.0/8 only, with or without TLS,
// so it does not require a secure transport.
type bearerCreds struct{ header string }

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

func (bearerCreds) RequireTransportSecurity() bool { return false }

// tokenOption returns the dial option that makes a connection carry secret,
// or nil for "".
func tokenOption(secret acl.Secret) grpc.DialOption {
	if secret == "" {
		return nil
	}
	return grpc.WithPerRPCCredentials(bearerCreds{header: "Bearer " + string(secret)})
}

// ManagementToken is the secret of the cluster's bootstrap management token
// (Options.ACL), which every harness connection carries; "" without ACLs.
func (c *Cluster) ManagementToken() string { return string(c.mgmt) }

// aclArgs are a node's ACL flags; none without Options.ACL.
func (c *Cluster) aclArgs() []string {
	if c.mgmt == "" {
		return nil
	}
	return []string{"--acl-enabled"}
}

// bootstrapACL bootstraps the cluster's ACLs with the management secret
// through whichever node answers, retrying until a leader exists. A cluster
// bootstrapped already (FailedPrecondition) is left as it is: the Status
// calls that follow tell whether it was with this secret.
func (c *Cluster) bootstrapACL(ctx context.Context) error {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.LeaderTimeout+c.opts.ReadyTimeout)
	defer cancel()
	err := poll.Until(ctx, func(ctx context.Context) error {
		var errs []error
		for _, n := range c.Running() {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := n.ACLClient().Bootstrap(callCtx, &registryv1.ACLBootstrapRequest{SecretId: string(c.mgmt)})
			cancel()
			if err == nil || status.Code(err) == codes.FailedPrecondition {
				return nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", n.id, err))
		}
		if len(errs) == 0 {
			return errors.New("no running node")
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("harness: ACL bootstrap: %w", err)
	}
	c.logf("ACLs bootstrapped with the harness's management token")
	return nil
}

// ACLClient is a registry.v1.ACL client on Conn (which carries the
// management token with Options.ACL).
func (n *Node) ACLClient() registryv1.ACLClient {
	return registryv1.NewACLClient(n.conn)
}

// DialToken opens a new client connection to the node whose calls carry
// secret instead of the management token, or no token at all for "". It
// uses the cluster's TLS client certificate with Options.TLS. The cluster's
// cleanup closes it.
func (n *Node) DialToken(secret string) (*grpc.ClientConn, error) {
	return n.cluster.dialToken(n.grpcAddr, acl.Secret(secret))
}
