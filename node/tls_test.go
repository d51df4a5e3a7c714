package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

// tlsCluster is three in-process nodes over real TCP, every port with TLS
// from one CA.
type tlsCluster struct {
	ca    tlsutil.PEMPair
	nodes []*node.Node
	dirs  []string
}

func newTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	c := &tlsCluster{ca: tlstest.CA(t)}
	var peers []node.Peer
	var lis []net.Listener
	for i := range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		peers = append(peers, node.Peer{ID: fmt.Sprintf("n%d", i+1), Address: l.Addr().String()})
	}
	for i := range 3 {
		dir := t.TempDir()
		c.dirs = append(c.dirs, dir)
		cfg := node.DefaultConfig()
		cfg.NodeID = peers[i].ID
		cfg.InMemory = true
		cfg.RaftListener = lis[i]
		cfg.RaftAddr, cfg.RaftAdvertise = peers[i].Address, peers[i].Address
		cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.BootstrapPeers = peers
		cfg.Raft = nodetest.FastRaft
		cfg.Logger = testLogger(t, peers[i].ID)
		cfg.TLS = tlstest.WriteFiles(t, dir, c.ca, tlstest.Cert(t, c.ca, true))
		cfg.TLS.ReloadInterval = 20 * time.Millisecond
		nd, err := node.New(cfg)
		if err != nil {
			t.Fatalf("starting %s: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() {
			if err := nd.Shutdown(context.Background()); err != nil {
				t.Errorf("shutdown %s: %v", nd.ID(), err)
			}
		})
		c.nodes = append(c.nodes, nd)
	}
	return c
}

// leader waits for a leader that every node knows.
func (c *tlsCluster) leader(t *testing.T) *node.Node {
	t.Helper()
	var leader *node.Node
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		leader = nil
		for _, nd := range c.nodes {
			if nd.IsLeader() {
				leader = nd
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		for _, nd := range c.nodes {
			if id, ok := nd.Leader(); !ok || id != leader.ID() {
				return fmt.Errorf("%s does not know the leader yet", nd.ID())
			}
			if meta, ok := nd.FSM().Node(leader.ID()); !ok || meta.GRPCAddress == "" {
				return fmt.Errorf("%s does not have the leader's address yet", nd.ID())
			}
		}
		return nil
	})
	return leader
}

// dial opens a gRPC connection to addr with creds.
func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// status calls Cluster.Status on cc with a short deadline.
func clusterStatus(t *testing.T, cc *grpc.ClientConn) (*registryv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return registryv1.NewClusterClient(cc).Status(ctx, &registryv1.StatusRequest{})
}

var peerCert = tlstest.PeerCertificate

func TestTLSClusterRefusesWhatItMust(t *testing.T) {
	c := newTLSCluster(t)
	leader := c.leader(t)
	follower := c.nodes[0]
	if follower == leader {
		follower = c.nodes[1]
	}
	otherCA := tlstest.CA(t)
	clientCert := tlstest.Cert(t, c.ca, false)
	nodeCert := tlstest.Cert(t, c.ca, true)
	strangerCert := tlstest.Cert(t, otherCA, true)
	clientCreds := credentials.NewTLS(tlstest.ClientConfig(t, c.ca, clientCert))

	t.Run("a client with a certificate writes through a follower and reads everywhere", func(t *testing.T) {
		cc := dial(t, follower.GRPCAddr(), clientCreds)
		if _, err := registryv1.NewRegistryClient(cc).Register(t.Context(), &registryv1.RegisterRequest{Instance: instance("orders", "orders-1")}); err != nil {
			t.Fatalf("Register through %s: %v", follower.ID(), err)
		}
		for _, nd := range c.nodes {
			poll.Eventually(t, 5*time.Second, func(context.Context) error {
				if _, ok := nd.FSM().Instance("orders", "orders-1"); !ok {
					return fmt.Errorf("%s does not have orders-1", nd.ID())
				}
				return nil
			})
		}
	})

	t.Run("a plaintext gRPC client fails", func(t *testing.T) {
		if _, err := clusterStatus(t, dial(t, leader.GRPCAddr(), insecure.NewCredentials())); err == nil {
			t.Error("a plaintext Status call succeeded against a TLS node")
		}
	})

	t.Run("a client without a certificate is refused under require", func(t *testing.T) {
		noCert := credentials.NewTLS(tlstest.ClientConfig(t, c.ca, tlsutil.PEMPair{}))
		if _, err := clusterStatus(t, dial(t, leader.GRPCAddr(), noCert)); err == nil {
			t.Error("a Status call without a client certificate succeeded")
		}
		if _, err := clusterStatus(t, dial(t, leader.GRPCAddr(), clientCreds)); err != nil {
			t.Errorf("with a client certificate: %v", err)
		}
	})

	t.Run("the HTTP port serves TLS with client certificates and exports the certificate expiry", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlstest.ClientConfig(t, c.ca, clientCert)}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get("https://" + leader.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cert, err := peerCert(t, leader.GRPCAddr(), tlstest.ClientConfig(t, c.ca, clientCert))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("registry_tls_cert_expiry_timestamp_seconds %g", float64(cert.NotAfter.Unix()))
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no line %q", want)
		}
		// net/http answers a plaintext request to a TLS port with a 400.
		if resp, err := (&http.Client{}).Get("http://" + leader.HTTPAddr() + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("plaintext HTTP: %s, want 400 or an error", resp.Status)
			}
		}
		noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: tlstest.ClientConfig(t, c.ca, tlsutil.PEMPair{})}}
		if resp, err := noCert.Get("https://" + leader.HTTPAddr() + "/healthz"); err == nil {
			resp.Body.Close()
			t.Error("HTTPS without a client certificate succeeded under require")
		}
	})

	t.Run("the Raft port takes only a node certificate of the CA", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cfg  *tls.Config
			ok   bool
		}{
			{"node certificate", tlstest.ClientConfig(t, c.ca, nodeCert), true},
			{"client certificate", tlstest.ClientConfig(t, c.ca, clientCert), false},
			{"no certificate", tlstest.ClientConfig(t, c.ca, tlsutil.PEMPair{}), false},
			{"another CA's node certificate", tlstest.ClientConfig(t, c.ca, strangerCert), false},
		} {
			if _, err := peerSerial(t, leader.RaftAddr(), tc.cfg); (err == nil) != tc.ok {
				t.Errorf("%s: error %v, want ok=%v", tc.name, err, tc.ok)
			}
		}
	})

	t.Run("a client certificate cannot join", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := registryv1.NewClusterClient(dial(t, follower.GRPCAddr(), clientCreds)).Join(ctx, &registryv1.JoinRequest{NodeId: "n8", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Join with a client certificate: %v, want PERMISSION_DENIED", err)
		}
	})

	t.Run("a node with another CA's certificate cannot join", func(t *testing.T) {
		stranger := credentials.NewTLS(tlstest.ClientConfig(t, otherCA, strangerCert))
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := registryv1.NewClusterClient(dial(t, leader.GRPCAddr(), stranger)).Join(ctx, &registryv1.JoinRequest{NodeId: "n9", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"})
		if err == nil {
			t.Fatal("Join with another CA's certificate succeeded")
		}
		st, err := clusterStatus(t, dial(t, leader.GRPCAddr(), clientCreds))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Members) != 3 {
			t.Errorf("members %v, want the three nodes", st.Members)
		}
	})
}

// peerSerial is the serial of the certificate addr presents (see peerCert).
func peerSerial(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	cert, err := peerCert(t, addr, cfg)
	if err != nil {
		return "", err
	}
	return cert.SerialNumber.String(), nil
}

func TestReplacedCertificateFilesAreUsedWithoutARestartOrAnElection(t *testing.T) {
	c := newTLSCluster(t)
	leader := c.leader(t)
	term := leader.Raft().CurrentTerm()
	i := 0
	for c.nodes[i] != leader {
		i++
	}
	client := tlstest.ClientConfig(t, c.ca, tlstest.Cert(t, c.ca, true))
	fresh := tlstest.Cert(t, c.ca, true)
	want := tlstest.Parse(t, fresh).SerialNumber.String()
	for _, addr := range []string{leader.GRPCAddr(), leader.HTTPAddr(), leader.RaftAddr()} {
		if got, err := peerSerial(t, addr, client); err != nil || got == want {
			t.Fatalf("%s before the rotation: serial %s, error %v", addr, got, err)
		}
	}

	tlstest.WriteFiles(t, c.dirs[i], c.ca, fresh)
	for _, addr := range []string{leader.GRPCAddr(), leader.HTTPAddr(), leader.RaftAddr()} {
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			got, err := peerSerial(t, addr, client)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s presents serial %s, want the new %s", addr, got, want)
			}
			return nil
		})
	}
	// The node presents the new certificate to its peers too: a write
	// still commits, on the same term, with the same leader.
	cc := dial(t, leader.GRPCAddr(), credentials.NewTLS(tlstest.ClientConfig(t, c.ca, tlstest.Cert(t, c.ca, false))))
	if _, err := registryv1.NewRegistryClient(cc).Register(t.Context(), &registryv1.RegisterRequest{Instance: instance("orders", "after-rotation")}); err != nil {
		t.Fatalf("Register after the rotation: %v", err)
	}
	for _, nd := range c.nodes {
		if got := nd.Raft().CurrentTerm(); got != term {
			t.Errorf("%s is at term %d, was %d: an election happened", nd.ID(), got, term)
		}
	}
	if !leader.IsLeader() {
		t.Error("the leader lost leadership")
	}
}
