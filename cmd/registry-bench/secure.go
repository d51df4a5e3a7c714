package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
)

// security is -secure: the local nodes run with mutual TLS on every port
// and ACLs on, and every connection of the benchmark presents a client
// certificate and the management token, so that W1 and W2 can be compared
// with a plaintext run. The CA and the certificates are made with tlsutil
// into a temporary directory; the management secret is chosen here and
// given to the nodes as their --acl-token (REGISTRY_ACL_TOKEN), then the
// ACLs are bootstrapped with it (ACL.Bootstrap's secret_id) once a leader
// exists, as the integration harness does.
type security struct {
	dir       string
	nodeFlags []string    // --tls-* and --acl-enabled
	env       []string    // REGISTRY_ACL_TOKEN
	tls       *tls.Config // the benchmark's client side
	http      *http.Client
	secret    acl.Secret
}

// sec is the -secure setup, nil without it. Set once by run before any
// workload.
var sec *security

// newSecurity makes a CA, a node certificate naming ip (shared by the three
// nodes: they differ only by port) and a client certificate in a new
// temporary directory.
func newSecurity(ip string) (*security, error) {
	dir, err := os.MkdirTemp("", "registry-bench-tls-")
	if err != nil {
		return nil, err
	}
	s := &security{dir: dir, secret: acl.NewSecret()}
	if err := s.makeFiles(ip); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *security) makeFiles(ip string) error {
	ca, err := tlsutil.CreateCA(tlsutil.CAOptions{})
	if err != nil {
		return err
	}
	node, err := tlsutil.CreateCert(ca, tlsutil.CertOptions{Server: true, CommonName: "bench-node", IPs: []net.IP{net.ParseIP(ip)}})
	if err != nil {
		return err
	}
	cl, err := tlsutil.CreateCert(ca, tlsutil.CertOptions{CommonName: "registry-bench"})
	if err != nil {
		return err
	}
	f := func(name string) string { return filepath.Join(s.dir, name) }
	if err := os.WriteFile(f("ca.pem"), ca.Cert, 0o644); err != nil {
		return err
	}
	if err := node.WriteFiles(f("node.pem"), f("node-key.pem")); err != nil {
		return err
	}
	if err := cl.WriteFiles(f("client.pem"), f("client-key.pem")); err != nil {
		return err
	}
	if s.tls, err = tlsutil.ClientConfig(f("ca.pem"), f("client.pem"), f("client-key.pem")); err != nil {
		return err
	}
	s.http = &http.Client{Transport: &http.Transport{TLSClientConfig: s.tls.Clone()}}
	s.nodeFlags = []string{"--tls-cert", f("node.pem"), "--tls-key", f("node-key.pem"), "--tls-ca", f("ca.pem"), "--acl-enabled"}
	s.env = []string{"REGISTRY_ACL_TOKEN=" + string(s.secret)}
	return nil
}

func (s *security) close() {
	if s.http != nil {
		s.http.CloseIdleConnections()
	}
	os.RemoveAll(s.dir)
}

// dialOptions are the benchmark's own gRPC connections' credentials:
// plaintext, or with -secure its client certificate and the token.
func dialOptions() []grpc.DialOption {
	if sec == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(sec.tls.Clone())),
		grpc.WithPerRPCCredentials(bearer("Bearer " + string(sec.secret))),
	}
}

// bearer is an ACL token sent on every call (over TLS only).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// httpClient and httpURL reach the nodes' HTTP ports (metrics, pprof):
// with -secure over TLS with the client certificate.
func httpClient() *http.Client {
	if sec == nil {
		return http.DefaultClient
	}
	return sec.http
}

func httpURL(addr, path string) string {
	if sec == nil {
		return "http://" + addr + path
	}
	return "https://" + addr + path
}

// bootstrap bootstraps the ACLs of a fresh cluster with the chosen secret
// through whichever node answers, once there is a leader.
func (c *cluster) bootstrap(ctx context.Context) error {
	return poll.Until(ctx, func(ctx context.Context) error {
		var errs []error
		for _, a := range c.endpoints {
			cc, err := c.conn(a)
			if err != nil {
				return err
			}
			callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = registryv1.NewACLClient(cc).Bootstrap(callCtx, &registryv1.ACLBootstrapRequest{SecretId: string(sec.secret)})
			cancel()
			if err == nil || status.Code(err) == codes.FailedPrecondition {
				return nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
		return fmt.Errorf("ACL bootstrap: %w", errors.Join(errs...))
	})
}
