// Package tlstest makes CAs and certificates and writes them to files, for
// tests only.
package tlstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regcenter/registry/tlsutil"
)

// CA makes a new CA.
func CA(t testing.TB) tlsutil.PEMPair {
	t.Helper()
	ca, err := tlsutil.CreateCA(tlsutil.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Cert makes a node (server true) or client certificate signed by ca.
func Cert(t testing.TB, ca tlsutil.PEMPair, server bool) tlsutil.PEMPair {
	t.Helper()
	p, err := tlsutil.CreateCert(ca, tlsutil.CertOptions{Server: server, CommonName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Parse parses p's certificate.
func Parse(t testing.TB, p tlsutil.PEMPair) *x509.Certificate {
	t.Helper()
	pp, err := tlsutil.ParsePair(p)
	if err != nil {
		t.Fatal(err)
	}
	return pp.Leaf
}

// WriteFiles writes ca's certificate and cert to dir as ca.pem, cert.pem
// and key.pem, replacing each file by a rename, and returns a Config that
// names them.
func WriteFiles(t testing.TB, dir string, ca, cert tlsutil.PEMPair) tlsutil.Config {
	t.Helper()
	cfg := tlsutil.Config{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
	}
	for name, data := range map[string][]byte{cfg.CAFile: ca.Cert, cfg.CertFile: cert.Cert, cfg.KeyFile: cert.Key} {
		if err := os.WriteFile(name+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// ClientConfig is a client's TLS config that trusts ca and presents cert
// (none if cert is empty).
func ClientConfig(t testing.TB, ca, cert tlsutil.PEMPair) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(Parse(t, ca))
	c := &tls.Config{ServerName: tlsutil.ServerName, RootCAs: pool}
	if cert.Cert != nil {
		kp, err := tls.X509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

// PeerCertificate completes a TLS handshake with a node's port at addr as
// cfg and returns the certificate the node presented, or the error of the
// handshake or, for a refused client certificate, of the first read.
func PeerCertificate(t testing.TB, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"} // the gRPC port insists on h2
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tc := conn.(*tls.Conn)
	cert := tc.ConnectionState().PeerCertificates[0]
	// A TLS 1.3 server refuses a client certificate after the client's
	// handshake has returned: the refusal arrives as an alert on the first
	// read. A Raft port that accepted us waits for a request: a timeout.
	tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, err
		}
	}
	return cert, nil
}
