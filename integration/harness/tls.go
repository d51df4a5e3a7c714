package harness

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"google.golang.org/grpc/credentials"

	"github.com/regcenter/registry/tlsutil"
)

// clusterTLS is a cluster's CA and the harness's own client certificate,
// with Options.TLS.
type clusterTLS struct {
	ca    tlsutil.PEMPair
	files tlsutil.Config // the CA file and the harness's client certificate
	creds credentials.TransportCredentials
	http  *http.Client // trusts ca, presents the client certificate
}

// newClusterTLS creates a CA and a client certificate in dir.
func newClusterTLS(dir string) (*clusterTLS, error) {
	ca, err := tlsutil.CreateCA(tlsutil.CAOptions{})
	if err != nil {
		return nil, err
	}
	client, err := tlsutil.CreateCert(ca, tlsutil.CertOptions{CommonName: "harness"})
	if err != nil {
		return nil, err
	}
	files, err := writeTLSFiles(dir, ca, client)
	if err != nil {
		return nil, err
	}
	cfg, err := tlsutil.ClientConfig(files.CAFile, files.CertFile, files.KeyFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.Clone()
	return &clusterTLS{ca: ca, files: files, creds: credentials.NewTLS(cfg), http: &http.Client{Transport: tr}}, nil
}

// writeTLSFiles writes ca's certificate and cert into dir (ca.pem, cert.pem,
// key.pem), each replaced by a rename so that a node never reads half a
// file.
func writeTLSFiles(dir string, ca, cert tlsutil.PEMPair) (tlsutil.Config, error) {
	files := tlsutil.Config{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return files, err
	}
	for name, data := range map[string][]byte{files.CAFile: ca.Cert, files.CertFile: cert.Cert, files.KeyFile: cert.Key} {
		if err := os.WriteFile(name+".tmp", data, 0o600); err != nil {
			return files, err
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			return files, err
		}
	}
	return files, nil
}

// tlsArgs gives node n a node certificate (naming the cluster's IP too) in
// its directory and returns its --tls-* flags; none without Options.TLS.
func (c *Cluster) tlsArgs(n *Node) ([]string, error) {
	if c.tls == nil {
		return nil, nil
	}
	if _, err := n.RotateCertificate(); err != nil {
		return nil, err
	}
	return []string{"--tls-cert=" + n.tlsFiles.CertFile, "--tls-key=" + n.tlsFiles.KeyFile, "--tls-ca=" + n.tlsFiles.CAFile}, nil
}

// HTTPClient is an HTTP client for the nodes' HTTP ports: with Options.TLS
// it trusts the cluster's CA and presents the harness's client
// certificate. It carries no token.
func (c *Cluster) HTTPClient() *http.Client {
	if c.tls == nil {
		return http.DefaultClient
	}
	return c.tls.http
}

// HTTPURL is the URL of path on the node's HTTP port: https with
// Options.TLS, http otherwise.
func (n *Node) HTTPURL(path string) string {
	scheme := "http"
	if n.cluster.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + n.httpAddr + path
}

// CA is the cluster's CA (Options.TLS), to make more certificates with.
func (c *Cluster) CA() tlsutil.PEMPair { return c.tls.ca }

// ClientTLSFiles are the CA file and the harness's client certificate and
// key (Options.TLS).
func (c *Cluster) ClientTLSFiles() tlsutil.Config { return c.tls.files }

// RotateCertificate writes a new node certificate for n over its files
// (Options.TLS) and returns it; the node reads it within seconds, or at
// once on SIGHUP (Node.Signal).
func (n *Node) RotateCertificate() (tlsutil.PEMPair, error) {
	return n.writeCertificate(n.cluster.tls.ca, n.cluster.tls.ca.Cert)
}

// writeCertificate writes a node certificate of ca for n, and trust (PEM
// certificates) as the CAs it trusts, into n's TLS files.
func (n *Node) writeCertificate(ca tlsutil.PEMPair, trust []byte) (tlsutil.PEMPair, error) {
	c := n.cluster
	cert, err := tlsutil.CreateCert(ca, tlsutil.CertOptions{Server: true, CommonName: n.id, IPs: []net.IP{net.ParseIP(c.ip)}})
	if err != nil {
		return cert, err
	}
	n.tlsFiles, err = writeTLSFiles(filepath.Join(n.dir, "tls"), tlsutil.PEMPair{Cert: trust}, cert)
	if err != nil {
		return cert, fmt.Errorf("%s: tls files: %w", n.id, err)
	}
	return cert, nil
}

// StartOutsider starts a registry-node on the next spare slot (see
// Options.Spare) that has a node certificate of ca, trusts both ca and the
// cluster's CA (so that only the members can refuse it), and tries to join
// the cluster through a running member (--join, with the management token
// under Options.ACL; --log-level=debug, where each failed attempt is
// logged): a node of another cluster, or an attacker's. It does not wait
// for it to answer, and it is never one of
// Nodes (nor of Running, WaitLeader...); the cleanup stops it by pid and
// prints its log like the members'. Options.TLS only.
func (c *Cluster) StartOutsider(ca tlsutil.PEMPair) (*Node, error) {
	if c.tls == nil {
		return nil, errors.New("harness: StartOutsider needs Options.TLS")
	}
	running := c.Running()
	if len(running) == 0 {
		return nil, errors.New("harness: start outsider: no running member to join through")
	}
	c.mu.Lock()
	slot := len(c.nodes) + len(c.removed) + len(c.outsiders)
	c.mu.Unlock()
	if slot >= c.opts.Nodes+c.opts.Spare {
		return nil, fmt.Errorf("start outsider: %w (Options.Nodes %d, Spare %d)", ErrNoSpareSlot, c.opts.Nodes, c.opts.Spare)
	}
	n, err := c.newNode(slot, "--join="+running[0].grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("harness: start outsider: %w", err)
	}
	n.id += "-outsider"
	if _, err := n.writeCertificate(ca, append(slices.Clone(ca.Cert), c.tls.ca.Cert...)); err != nil {
		return nil, err
	}
	for i, a := range n.args {
		switch {
		case strings.HasPrefix(a, "--node-id="):
			n.args[i] = "--node-id=" + n.id
		case strings.HasPrefix(a, "--log-level="):
			n.args[i] = "--log-level=debug"
		}
	}
	c.mu.Lock()
	c.outsiders = append(c.outsiders, n)
	c.mu.Unlock()
	return n, n.start()
}

// Signal sends sig to the node's live process.
func (n *Node) Signal(sig syscall.Signal) error {
	p, err := n.live()
	if err != nil {
		return err
	}
	return p.Signal(sig)
}
