package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotServer means a peer's certificate does not name ServerName.
var ErrNotServer = errors.New("tls: peer certificate is not a registry server's (no DNS name " + ServerName + ")")

// material is one loaded set of files.
type material struct {
	cert  tls.Certificate // Leaf set
	pool  *x509.CertPool
	stamp string // the files' sizes and modification times
}

// Source serves *tls.Config values built from the current files. The
// configs it returns read the files' latest contents at each handshake.
type Source struct {
	cfg      Config
	auth     tls.ClientAuthType
	log      *slog.Logger
	cur      atomic.Pointer[material]
	onReload func(*x509.Certificate)
	failed   string // the stamp of files that did not load, logged once

	reloadMu sync.Mutex
	stop     chan struct{}
	wg       sync.WaitGroup
	close    sync.Once
}

// NewSource loads the files of cfg (which must be Enabled and valid) and
// starts a goroutine that reloads them when they change, until Close. It
// logs each load and, once per change of the files, a reload that failed
// (log may be nil). onReload, if not nil, is called with the certificate
// after the first load and after each reload that changed something.
func NewSource(cfg Config, log *slog.Logger, onReload func(*x509.Certificate)) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("tls: no files configured")
	}
	auth, _ := clientAuthType(cfg.ClientAuth)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, auth: auth, log: log, onReload: onReload, stop: make(chan struct{})}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	if cfg.ReloadInterval > 0 {
		s.wg.Add(1)
		go s.watch()
	}
	return s, nil
}

// Close stops the watcher and waits for it.
func (s *Source) Close() {
	s.close.Do(func() { close(s.stop) })
	s.wg.Wait()
}

func (s *Source) watch() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if st := stamp(s.cfg); st != s.cur.Load().stamp && st != s.failed {
				// A failed reload keeps the old files; the files are
				// tried again when they change again.
				if _, err := s.Reload(); err != nil {
					s.failed = st
					s.log.Error("tls files did not load; the previous ones stay in use", "error", err)
				}
			}
		}
	}
}

// stamp sums up the files' sizes and modification times.
func stamp(c Config) string {
	var b bytes.Buffer
	for _, f := range []string{c.CertFile, c.KeyFile, c.CAFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			b.WriteString("-;")
		}
	}
	return b.String()
}

// Reload reads the files again. On error the previous files stay in use.
// It reports whether the certificate or CA changed.
func (s *Source) Reload() (bool, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	st := stamp(s.cfg)
	m, err := load(s.cfg)
	if err != nil {
		return false, err
	}
	m.stamp = st
	old := s.cur.Load()
	if old != nil && bytes.Equal(old.cert.Leaf.Raw, m.cert.Leaf.Raw) && old.pool.Equal(m.pool) {
		s.cur.Store(m) // the new stamp: do not read unchanged files again
		return false, nil
	}
	s.cur.Store(m)
	s.log.Info("tls files loaded", "serial", m.cert.Leaf.SerialNumber.String(), "not_after", m.cert.Leaf.NotAfter)
	if s.onReload != nil {
		s.onReload(m.cert.Leaf)
	}
	return true, nil
}

func load(c Config) (*material, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s and %s: %w", c.CertFile, c.KeyFile, err)
	}
	pool, err := LoadCAFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	return &material{cert: cert, pool: pool}, nil
}

// LoadCAFile reads a PEM file of one or more CA certificates.
func LoadCAFile(name string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tls: ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: ca %s: no PEM certificate", name)
	}
	return pool, nil
}

// Certificate is the certificate in use.
func (s *Source) Certificate() *x509.Certificate { return s.cur.Load().cert.Leaf }

// ServerConfig is for the client-facing listeners (gRPC, HTTP): it asks
// for client certificates as Config.ClientAuth says. nextProtos are the
// ALPN protocols to offer ("h2" for gRPC).
func (s *Source) ServerConfig(nextProtos ...string) *tls.Config {
	return s.serverConfig(s.auth, nil, nextProtos)
}

// GRPCServerConfig is for the gRPC listener: ServerConfig("h2"), except
// that it always asks for a certificate (and verifies one given), so that
// a node can prove itself a node (VerifyServer) even under ClientAuthNone.
func (s *Source) GRPCServerConfig() *tls.Config {
	return s.serverConfig(max(s.auth, tls.VerifyClientCertIfGiven), nil, []string{"h2"})
}

// PeerServerConfig is for the Raft listener: the peer must present a
// registry server's certificate from the CA.
func (s *Source) PeerServerConfig() *tls.Config {
	return s.serverConfig(tls.RequireAndVerifyClientCert, VerifyServer, nil)
}

func (s *Source) serverConfig(auth tls.ClientAuthType, verify func(tls.ConnectionState) error, nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:       tls.VersionTLS12,
				NextProtos:       nextProtos,
				Certificates:     []tls.Certificate{m.cert},
				ClientAuth:       auth,
				ClientCAs:        m.pool,
				VerifyConnection: verify,
			}, nil
		},
	}
}

// PeerClientConfig is for dialing another node (Raft, gRPC): it presents
// this node's certificate and accepts only a registry server's certificate
// from the CA. Each call reads the current files; dial with a fresh one.
func (s *Source) PeerClientConfig() *tls.Config {
	m := s.cur.Load()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ServerName:   ServerName,
		RootCAs:      m.pool,
		Certificates: []tls.Certificate{m.cert},
	}
}

// VerifyServer checks that a connection's peer presented a certificate
// that verified against the CA and names ServerName: a registry node.
func VerifyServer(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ErrNotServer
	}
	if err := cs.VerifiedChains[0][0].VerifyHostname(ServerName); err != nil {
		return fmt.Errorf("%w: %v", ErrNotServer, err)
	}
	return nil
}

// ClientConfig builds a client's config from files: caFile to verify the
// nodes (which must present a registry server's certificate), and
// certFile and keyFile, if set, as the client's certificate. An empty
// caFile uses the system's roots.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: ServerName}
	if caFile != "" {
		pool, err := LoadCAFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("tls: cert (%q) and key (%q) files: set both or neither", certFile, keyFile)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: loading %s and %s: %w", certFile, keyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
