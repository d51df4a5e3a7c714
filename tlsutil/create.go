package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// The DNS names that mark a certificate's role in the cluster.
const (
	ServerName = "server.registry"
	ClientName = "client.registry"
)

// Default lifetimes of what Create* makes.
const (
	DefaultCADays   = 5 * 365
	DefaultCertDays = 365
)

// PEMPair is a certificate and its private key, PEM-encoded.
type PEMPair struct {
	Cert, Key []byte
}

// CAOptions shape a new CA. Zero fields take defaults.
type CAOptions struct {
	CommonName string    // default "Registry Agent CA"
	Days       int       // default DefaultCADays
	Now        time.Time // default time.Now(); for tests
}

// CertOptions shape a new node (Server) or client certificate.
type CertOptions struct {
	// Server makes a node certificate: DNS names ServerName and localhost,
	// IP 127.0.0.1, usable as TLS server and client. Otherwise a client
	// certificate: DNS name ClientName, usable as TLS client only.
	Server bool
	// CommonName is the subject's name (a node id or a client's name).
	CommonName string
	// DNSNames and IPs are added to a server certificate's names.
	DNSNames []string
	IPs      []net.IP
	Days     int       // default DefaultCertDays
	Now      time.Time // default time.Now(); for tests
}

// CreateCA makes a self-signed CA certificate and key.
func CreateCA(o CAOptions) (PEMPair, error) {
	if o.CommonName == "" {
		o.CommonName = "Registry Agent CA"
	}
	key, tmpl, err := newKeyAndTemplate(o.CommonName, o.Days, DefaultCADays, o.Now)
	if err != nil {
		return PEMPair{}, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.MaxPathLenZero = true
	return sign(tmpl, tmpl, &key.PublicKey, key, key)
}

// CreateCert makes a certificate signed by the CA in ca.
func CreateCert(ca PEMPair, o CertOptions) (PEMPair, error) {
	caPair, err := ParsePair(ca)
	if err != nil {
		return PEMPair{}, fmt.Errorf("ca: %w", err)
	}
	caCert, caKey := caPair.Leaf, caPair.PrivateKey
	if caCert == nil || !caCert.IsCA {
		return PEMPair{}, errors.New("ca: the certificate is not a CA")
	}
	key, tmpl, err := newKeyAndTemplate(o.CommonName, o.Days, DefaultCertDays, o.Now)
	if err != nil {
		return PEMPair{}, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if o.Server {
		tmpl.DNSNames = append([]string{ServerName, "localhost"}, o.DNSNames...)
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1)}, o.IPs...)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames = []string{ClientName}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	return sign(tmpl, caCert, &key.PublicKey, key, caKey)
}

// newKeyAndTemplate makes a P-256 key and a certificate template with a
// random serial, valid from a minute before now for days days (def when
// days is 0).
func newKeyAndTemplate(cn string, days, def int, now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	if days < 0 {
		return nil, nil, fmt.Errorf("days %d: must be positive", days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if days == 0 {
		days = def
	}
	if now.IsZero() {
		now = time.Now()
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	return key, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Duration(days) * 24 * time.Hour),
	}, nil
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key, signer *ecdsa.PrivateKey) (PEMPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return PEMPair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return PEMPair{}, err
	}
	return PEMPair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// ParsedPair is a parsed certificate and its ECDSA key.
type ParsedPair struct {
	Leaf       *x509.Certificate
	PrivateKey *ecdsa.PrivateKey
}

// ParsePair parses a PEM certificate and ECDSA key.
func ParsePair(p PEMPair) (ParsedPair, error) {
	c, err := parseCert(p.Cert)
	if err != nil {
		return ParsedPair{}, err
	}
	b, _ := pem.Decode(p.Key)
	if b == nil {
		return ParsedPair{}, errors.New("key: no PEM block")
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return ParsedPair{}, fmt.Errorf("key: %w", err)
	}
	return ParsedPair{Leaf: c, PrivateKey: k}, nil
}

func parseCert(pemBytes []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("certificate: no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// WriteFiles writes the certificate to certFile (mode 0644) and the key to
// keyFile (mode 0600). It refuses to overwrite either.
func (p PEMPair) WriteFiles(certFile, keyFile string) error {
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s already exists", f)
		}
	}
	if err := writeNew(keyFile, p.Key, 0o600); err != nil {
		return err
	}
	return writeNew(certFile, p.Cert, 0o644)
}

func writeNew(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadPair reads a PEM certificate and key from files.
func ReadPair(certFile, keyFile string) (PEMPair, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return PEMPair{}, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return PEMPair{}, err
	}
	return PEMPair{Cert: c, Key: k}, nil
}
