// Package tlstest makes CAs and certificates and writes them to files, for
// tests only.
package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

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
