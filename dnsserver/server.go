package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// ErrNoState: Deps.State is required.
var ErrNoState = errors.New("dns: a state reader is required")

// Deps are what a Server reads and reports to.
type Deps struct {
	// State is the local replica.
	State StateReader
	// ReadAllowed, if set (ACLs on), reports whether a query, which carries
	// no token, may read a service: the anonymous reader's rules.
	ReadAllowed func(service string) bool
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics default to unregistered ones.
	Metrics *Metrics
}

// Server answers DNS over UDP and TCP on one port.
type Server struct {
	res      *resolver
	log      *slog.Logger
	metrics  *Metrics
	inflight chan struct{} // a slot per query being answered
	udp, tcp *dns.Server
	addr     string
	wg       sync.WaitGroup
	close    sync.Once
}

// New binds cfg.Addr (UDP, then TCP on the same port) and serves until
// Close. cfg must be enabled (Addr set).
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("dns addr: is empty (DNS is off)")
	}
	if deps.State == nil {
		return nil, ErrNoState
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Metrics == nil {
		deps.Metrics = NewMetrics(nil)
	}
	pc, ln, err := listen(cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		res:      newResolver(cfg, deps),
		log:      deps.Logger,
		metrics:  deps.Metrics,
		inflight: make(chan struct{}, cfg.MaxInflight),
		addr:     pc.LocalAddr().String(),
	}
	idle := cfg.TCPIdleTimeout
	s.udp = &dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.DefaultMsgSize}
	s.tcp = &dns.Server{
		Listener:    netutil.LimitListener(ln, cfg.MaxTCPConns),
		Handler:     s,
		ReadTimeout: idle,
		IdleTimeout: func() time.Duration { return idle },
	}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := s.serve(srv); err != nil {
			pc.Close()
			ln.Close()
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// listen binds addr for UDP, then TCP on the port UDP got (with port 0,
// retrying a few times should that port be taken for TCP).
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns addr %q: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns addr %s (udp): %w", addr, err)
		}
		got := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 4 {
			return nil, nil, fmt.Errorf("dns addr %s (tcp): %w", net.JoinHostPort(host, got), err)
		}
	}
}

// serve starts srv in a goroutine the Server owns and waits until it
// listens (so that Close always finds it started) or fails.
func (s *Server) serve(srv *dns.Server) error {
	started := make(chan struct{})
	failed := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.ActivateAndServe(); err != nil {
			failed <- err
			s.log.Error("dns server stopped", "error", err)
		}
	}()
	select {
	case <-started:
		return nil
	case err := <-failed:
		return fmt.Errorf("dns: serving: %w", err)
	}
}

// Addr is the bound address (the same port for UDP and TCP).
func (s *Server) Addr() string { return s.addr }

// Close stops both listeners, waits for the queries being answered and for
// the goroutines to end. It is safe to call more than once.
func (s *Server) Close() error {
	var errs []error
	s.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if srv == nil {
				continue
			}
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}

// ServeDNS answers one query (dns.Handler).
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	var m *dns.Msg
	select {
	case s.inflight <- struct{}{}:
		m = s.res.reply(req, replySize(w, req))
		<-s.inflight
	default:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
	}
	m.Truncate(replySize(w, req))
	// Counted before the reply is sent, so that a client that has its
	// answer sees it counted.
	var qtype uint16
	if len(req.Question) > 0 {
		qtype = req.Question[0].Qtype
	}
	s.metrics.queries.WithLabelValues(qtypeLabel(qtype), rcodeLabel(m.Rcode)).Inc()
	s.metrics.duration.Observe(time.Since(start).Seconds())
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns: writing a reply", "peer", w.RemoteAddr().String(), "error", err)
	}
}

// replySize is the most a reply may take: over TCP 65535 bytes, over UDP
// the client's EDNS0 buffer size (at least 512, at most the 4096 this
// server advertises in its own OPT record), else 512.
func replySize(w dns.ResponseWriter, req *dns.Msg) int {
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		return dns.MaxMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), dns.MinMsgSize), dns.DefaultMsgSize)
	}
	return dns.MinMsgSize
}
