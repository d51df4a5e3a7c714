package tlsutil_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

var (
	newCA      = tlstest.CA
	newCert    = tlstest.Cert
	writeFiles = tlstest.WriteFiles
	parse      = tlstest.Parse
)

func newSource(t *testing.T, cfg tlsutil.Config) *tlsutil.Source {
	t.Helper()
	s, err := tlsutil.NewSource(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestCreatedCertificatesVerify(t *testing.T) {
	ca := newCA(t)
	caCert := parse(t, ca)
	if !caCert.IsCA || caCert.NotAfter.Sub(caCert.NotBefore) < 4*365*24*time.Hour {
		t.Errorf("CA: IsCA %v, lifetime %v; want a CA of about 5 years", caCert.IsCA, caCert.NotAfter.Sub(caCert.NotBefore))
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	server, client := parse(t, newCert(t, ca, true)), parse(t, newCert(t, ca, false))
	if server.SerialNumber.Cmp(client.SerialNumber) == 0 {
		t.Error("two certificates have the same serial")
	}
	for _, tc := range []struct {
		name  string
		cert  *x509.Certificate
		dns   string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"server as server", server, tlsutil.ServerName, x509.ExtKeyUsageServerAuth, true},
		{"server as client", server, tlsutil.ServerName, x509.ExtKeyUsageClientAuth, true},
		{"server on localhost", server, "localhost", x509.ExtKeyUsageServerAuth, true},
		{"client as client", client, tlsutil.ClientName, x509.ExtKeyUsageClientAuth, true},
		{"client as server", client, tlsutil.ClientName, x509.ExtKeyUsageServerAuth, false},
		{"client named server", client, tlsutil.ServerName, x509.ExtKeyUsageClientAuth, false},
	} {
		_, err := tc.cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.dns, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("%s: verify error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if !slices.ContainsFunc(server.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Errorf("server IPs %v: want 127.0.0.1", server.IPAddresses)
	}
	if d := server.NotAfter.Sub(server.NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("server certificate lifetime %v: want a year", d)
	}
}

// handshake runs a TLS handshake over loopback TCP between a server and a
// client config and returns the serial the client saw and the client's and
// server's errors.
func handshake(t *testing.T, server, client *tls.Config) (serial string, clientErr, serverErr error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).HandshakeContext(t.Context())
		if err == nil {
			_, err = c.Write([]byte{1}) // the client learns of a refusal of its certificate on its first read
		}
		srvErr <- err
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: client}
	c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err == nil {
		serial = c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	return serial, err, <-srvErr
}

func TestPeersMustBeServersOfTheCA(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	nodeSrc := newSource(t, writeFiles(t, t.TempDir(), ca, newCert(t, ca, true)))
	clientSrc := newSource(t, writeFiles(t, t.TempDir(), ca, newCert(t, ca, false)))
	strangerSrc := newSource(t, writeFiles(t, t.TempDir(), otherCA, newCert(t, otherCA, true)))
	// A node whose CA file trusts both CAs: only its peers' certificates
	// decide the outcome.
	both := tlsutil.PEMPair{Cert: append(slices.Clone(ca.Cert), otherCA.Cert...)}
	trustingSrc := newSource(t, writeFiles(t, t.TempDir(), both, newCert(t, ca, true)))

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
	}{
		{"node to node", nodeSrc.PeerServerConfig(), nodeSrc.PeerClientConfig(), true},
		{"client certificate as a peer", nodeSrc.PeerServerConfig(), clientSrc.PeerClientConfig(), false},
		{"client certificate as a server", clientSrc.PeerServerConfig(), nodeSrc.PeerClientConfig(), false},
		{"another CA's node dials", nodeSrc.PeerServerConfig(), strangerSrc.PeerClientConfig(), false},
		{"another CA's node is dialed", strangerSrc.PeerServerConfig(), nodeSrc.PeerClientConfig(), false},
		{"another CA's node dials a node that trusts it", trustingSrc.PeerServerConfig(), strangerSrc.PeerClientConfig(), false},
		{"no certificate on the Raft port", nodeSrc.PeerServerConfig(), tlstest.ClientConfig(t, ca, tlsutil.PEMPair{}), false},
		{"client to the API", nodeSrc.ServerConfig(), clientConfig(t, ca, newCert(t, ca, false)), true},
		{"no certificate to the API under require", nodeSrc.ServerConfig(), tlstest.ClientConfig(t, ca, tlsutil.PEMPair{}), false},
		{"another CA's client to the API", nodeSrc.ServerConfig(), clientConfig(t, ca, newCert(t, otherCA, false)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cerr, serr := handshake(t, tc.server, tc.client)
			if ok := cerr == nil && serr == nil; ok != tc.ok {
				t.Errorf("client error %v, server error %v; want ok=%v", cerr, serr, tc.ok)
			}
		})
	}
}

// clientConfig is a client's config loaded by tlsutil.ClientConfig from
// files.
func clientConfig(t *testing.T, ca, cert tlsutil.PEMPair) *tls.Config {
	t.Helper()
	cfg := writeFiles(t, t.TempDir(), ca, cert)
	c, err := tlsutil.ClientConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientAuthModes(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	noCert := tlstest.ClientConfig(t, ca, tlsutil.PEMPair{})
	for mode, ok := range map[string]bool{tlsutil.ClientAuthRequire: false, tlsutil.ClientAuthVerifyIfGiven: true, tlsutil.ClientAuthNone: true} {
		cfg := writeFiles(t, t.TempDir(), ca, newCert(t, ca, true))
		cfg.ClientAuth = mode
		src := newSource(t, cfg)
		for name, server := range map[string]*tls.Config{"http": src.ServerConfig(), "grpc": src.GRPCServerConfig()} {
			_, cerr, serr := handshake(t, server, noCert)
			if got := cerr == nil && serr == nil; got != ok {
				t.Errorf("%s %s: a client without a certificate: client error %v, server error %v; want ok=%v", mode, name, cerr, serr, ok)
			}
		}
		// The gRPC port asks for a certificate even under none, and refuses
		// one that does not verify, so that Cluster.Join can tell nodes.
		_, cerr, serr := handshake(t, src.GRPCServerConfig(), tlstest.ClientConfig(t, ca, newCert(t, otherCA, true)))
		if cerr == nil && serr == nil {
			t.Errorf("%s grpc: another CA's certificate was accepted", mode)
		}
	}
}

func TestReloadPicksUpReplacedFiles(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	first := newCert(t, ca, true)
	cfg := writeFiles(t, dir, ca, first)
	cfg.ReloadInterval = 10 * time.Millisecond
	var reloads []*x509.Certificate
	reloaded := make(chan *x509.Certificate, 10)
	logs := make(logLines, 10)
	log := slog.New(slog.NewTextHandler(logs, nil))
	src, err := tlsutil.NewSource(cfg, log, func(c *x509.Certificate) { reloaded <- c })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	reloads = append(reloads, <-reloaded)
	peer := newSource(t, writeFiles(t, t.TempDir(), ca, newCert(t, ca, true)))

	serial, _, _ := handshake(t, src.PeerServerConfig(), peer.PeerClientConfig())
	if want := parse(t, first).SerialNumber.String(); serial != want {
		t.Fatalf("serial %s, want the first certificate's %s", serial, want)
	}
	second := newCert(t, ca, true)
	writeFiles(t, dir, ca, second)
	want := parse(t, second).SerialNumber.String()
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if serial, _, _ := handshake(t, src.PeerServerConfig(), peer.PeerClientConfig()); serial != want {
			return errors.New("still the first certificate: " + serial)
		}
		return nil
	})
	reloads = append(reloads, <-reloaded)
	if got := reloads[1].SerialNumber.String(); got != want {
		t.Errorf("onReload got serial %s, want %s", got, want)
	}

	// A broken file keeps the last good certificate; the watcher says so.
	if err := os.WriteFile(cfg.CertFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for logged := false; !logged; {
		select {
		case line := <-logs:
			logged = strings.Contains(line, "tls files did not load")
		case <-timeout:
			t.Fatal("the watcher logged no error for the broken file")
		}
	}
	if _, err := src.Reload(); err == nil {
		t.Error("Reload of a broken certificate file: no error")
	}
	if got := src.Certificate().SerialNumber.String(); got != want {
		t.Errorf("after a failed reload the serial is %s, want %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg tlsutil.Config
		ok  bool
	}{
		{tlsutil.DefaultConfig(), true},
		{tlsutil.Config{CertFile: "c", KeyFile: "k", CAFile: "a"}, true},
		{tlsutil.Config{CertFile: "c", KeyFile: "k"}, false},
		{tlsutil.Config{CAFile: "a"}, false},
		{tlsutil.Config{ClientAuth: "sometimes"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

// logLines passes each log line on, dropping lines nobody waits for.
type logLines chan string

func (c logLines) Write(p []byte) (int, error) {
	select {
	case c <- string(p):
	default:
	}
	return len(p), nil
}
