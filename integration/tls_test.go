package integration_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

// Three registry-node processes with --tls-*: they elect a leader and
// replicate over TLS (a write through a follower is forwarded over TLS); a
// plaintext client and one without a certificate are refused; a node whose
// certificate files are replaced and who gets SIGHUP (the only trigger:
// polling is off) presents the new certificate on new connections to all
// three ports, with no election and the same process.
func TestATLSClusterServesAndRotatesCertificatesWithoutAnElection(t *testing.T) {
	t.Parallel()
	// No polling for changed files: only SIGHUP can make the node read them.
	c := harness.Start(t, harness.Options{TLS: true, ExtraArgs: []string{"--tls-reload-interval=0"}})
	leader := waitLeader(t, c)
	follower := c.Followers()[0]
	ctx := t.Context()
	resp, err := follower.RegistryClient().Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("orders", "o1", 1)})
	if err != nil {
		t.Fatalf("Register through %s: %v", follower, err)
	}
	if err := c.WaitApplied(ctx, resp.Index); err != nil {
		t.Fatal(err)
	}

	files := c.ClientTLSFiles()
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":             insecure.NewCredentials(),
		"no client certificate": credentials.NewTLS(mustClientConfig(t, files.CAFile, "", "")),
	} {
		cc, err := grpc.NewClient(leader.GRPCAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := registryv1.NewClusterClient(cc).Status(callCtx, &registryv1.StatusRequest{}); err == nil {
			t.Errorf("%s: Status succeeded against a TLS node", name)
		}
		cancel()
		cc.Close()
	}

	before := map[*harness.Node]int{}
	var term uint64
	for _, n := range c.Nodes() {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before[n], term = n.PID(), max(term, st.Term)
	}
	cert, err := leader.RotateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want := tlstest.Parse(t, cert).SerialNumber.String()
	// A node's certificate: the Raft port takes no other.
	probe := tlstest.ClientConfig(t, c.CA(), tlstest.Cert(t, c.CA(), true))
	for _, addr := range []string{leader.GRPCAddr(), leader.HTTPAddr(), leader.RaftAddr()} {
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			got, err := tlstest.PeerCertificate(t, addr, probe)
			if err != nil {
				return err
			}
			if s := got.SerialNumber.String(); s != want {
				return fmt.Errorf("%s presents serial %s, want the new %s", addr, s, want)
			}
			return nil
		})
	}
	resp, err = follower.RegistryClient().Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("orders", "o2", 1)})
	if err != nil {
		t.Fatalf("Register through %s after the rotation: %v", follower, err)
	}
	if err := c.WaitApplied(ctx, resp.Index); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Term != term || st.LeaderId != leader.ID() {
			t.Errorf("%s: term %d leader %s, was term %d leader %s: an election happened", n, st.Term, st.LeaderId, term, leader)
		}
		if n.PID() != before[n] {
			t.Errorf("%s: pid %d, was %d: the process restarted", n, n.PID(), before[n])
		}
	}
}

func mustClientConfig(t *testing.T, ca, cert, key string) *tls.Config {
	t.Helper()
	cfg, err := tlsutil.ClientConfig(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
