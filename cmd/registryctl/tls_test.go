package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/tlsutil"
)

func TestTLSCreatesACAAndCertificates(t *testing.T) {
	t.Chdir(t.TempDir())
	checkGolden(t, []golden{
		{"tls-ca-create", []string{"tls", "ca", "create", "--days", "30"}},
		{"tls-ca-create-exists", []string{"tls", "ca", "create"}},
		{"tls-cert-create-server", []string{"tls", "cert", "create", "--server", "--node", "n1", "--dns", "n1.example", "--ip", "10.0.0.1"}},
		{"tls-cert-create-client", []string{"tls", "cert", "create", "--client"}},
		{"tls-cert-create-named-client", []string{"tls", "cert", "create", "--client", "--name", "deployer"}},
		{"tls-cert-create-neither", []string{"tls", "cert", "create"}},
		{"tls-cert-create-server-without-node", []string{"tls", "cert", "create", "--server"}},
		{"tls-cert-create-bad-ip", []string{"tls", "cert", "create", "--server", "--node", "n2", "--ip", "10.0.0"}},
	})
	for _, f := range []string{"registry-agent-ca-key.pem", "server-n1-key.pem", "client-key.pem", "client-deployer-key.pem"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	pool, err := tlsutil.LoadCAFile("registry-agent-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, "registry-agent-ca.pem")
	if d := ca.NotAfter.Sub(ca.NotBefore); d > 31*24*time.Hour {
		t.Errorf("--days 30: the CA is valid for %v", d)
	}
	for _, tc := range []struct {
		file, dns string
		usage     x509.ExtKeyUsage
		ok        bool
	}{
		{"server-n1.pem", tlsutil.ServerName, x509.ExtKeyUsageServerAuth, true},
		{"server-n1.pem", "n1.example", x509.ExtKeyUsageServerAuth, true},
		{"server-n1.pem", tlsutil.ServerName, x509.ExtKeyUsageClientAuth, true},
		{"client.pem", tlsutil.ClientName, x509.ExtKeyUsageClientAuth, true},
		{"client.pem", tlsutil.ServerName, x509.ExtKeyUsageClientAuth, false},
		{"client-deployer.pem", tlsutil.ClientName, x509.ExtKeyUsageServerAuth, false},
	} {
		_, err := readCert(t, tc.file).Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.dns, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("%s as %s (%v): %v, want ok=%v", tc.file, tc.dns, tc.usage, err, tc.ok)
		}
	}
	// The certificates end with the CA that signed them.
	if got := readCert(t, "server-n1.pem").NotAfter; got.After(ca.NotAfter) {
		t.Errorf("the server certificate outlives the CA: %v > %v", got, ca.NotAfter)
	}
}

func readCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	p, err := tlsutil.ReadPair(name, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pemBlock(t, p.Cert))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTheTLSFlagsAndEnvironmentReachATLSNode(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, args := range [][]string{
		{"tls", "ca", "create"},
		{"tls", "cert", "create", "--server", "--node", "n1"},
		{"tls", "cert", "create", "--client"},
	} {
		if _, stderr, code := ctl(t, args...); code != exitOK {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	nd := nodetest.Single(t, func(cfg *node.Config) {
		cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile = "server-n1.pem", "server-n1-key.pem", "registry-agent-ca.pem"
	})
	endpoint := []string{"--endpoints", nd.GRPCAddr(), "--timeout", "2s"}

	if _, stderr, code := ctl(t, append(endpoint, "--cacert", "registry-agent-ca.pem", "cluster", "status")...); code != exitFailure {
		t.Errorf("without a client certificate: exit %d, want 1 (%s)", code, stderr)
	}
	if _, stderr, code := ctl(t, append(endpoint, "cluster", "status")...); code != exitFailure {
		t.Errorf("plaintext: exit %d, want 1 (%s)", code, stderr)
	}
	if stdout, stderr, code := ctl(t, append(endpoint, "--cacert", "registry-agent-ca.pem", "--cert", "client.pem", "--key", "client-key.pem", "cluster", "status")...); code != exitOK {
		t.Errorf("with the flags: exit %d: %s%s", code, stdout, stderr)
	}
	t.Setenv(caCertEnv, "registry-agent-ca.pem")
	t.Setenv(certEnv, "client.pem")
	t.Setenv(keyEnv, "client-key.pem")
	if stdout, stderr, code := ctl(t, append(endpoint, "cluster", "status")...); code != exitOK {
		t.Errorf("with the environment: exit %d: %s%s", code, stdout, stderr)
	}
}

func pemBlock(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}
