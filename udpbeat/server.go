package udpbeat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/regcenter/registry/internal/defaults"
)

// Committer commits authenticated beats through the beat group commit and
// returns the outcome of each, in order; rpc.Server implements it.
type Committer interface {
	UDPBeats(ctx context.Context, beats []Received) ([]Outcome, error)
}

// Replica reads the local replica: the cluster beat secret and, for the
// early replay check, an instance's incarnation and last UDP sequence
// number. The node adapts its FSM to it.
type Replica interface {
	BeatSecret() []byte
	LastUDPSeq(service, id string) (incarnation, seq uint64, ok bool)
}

// Config tunes a Server. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// QueueSize bounds the authenticated datagrams waiting for the group
	// commit; beyond it a datagram is dropped (reason queue_full).
	QueueSize int
	// MaxBatch bounds the datagrams one worker submits at once.
	MaxBatch int
	// Workers is the number of goroutines submitting to the group commit;
	// more than one lets a batch gather while another commits.
	Workers int
	// SourceRate and SourceBurst bound the datagrams per second one source
	// address may send (token bucket); beyond it a datagram is dropped
	// (reason rate_limited) before any MAC is computed.
	SourceRate  float64
	SourceBurst int
	// MaxSources bounds the source addresses tracked; a full table is
	// emptied.
	MaxSources int
	// CommitTimeout bounds one submission to the group commit.
	CommitTimeout time.Duration
	// Logger receives the receiver's few log lines; nil discards them
	// (the node sets its own).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		QueueSize:     16_384,
		MaxBatch:      4096,
		Workers:       4,
		SourceRate:    20_000,
		SourceBurst:   20_000,
		MaxSources:    65_536,
		CommitTimeout: 5 * time.Second,
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c Config) Validate() error {
	switch {
	case c.QueueSize < 1 || c.MaxBatch < 1 || c.Workers < 1 || c.MaxSources < 1:
		return fmt.Errorf("udpbeat: QueueSize (%d), MaxBatch (%d), Workers (%d) and MaxSources (%d) must be at least 1",
			c.QueueSize, c.MaxBatch, c.Workers, c.MaxSources)
	case c.SourceRate <= 0 || c.SourceBurst < 1:
		return fmt.Errorf("udpbeat: SourceRate (%v) must be positive and SourceBurst (%d) at least 1", c.SourceRate, c.SourceBurst)
	case c.CommitTimeout <= 0:
		return fmt.Errorf("udpbeat: CommitTimeout (%v) must be positive", c.CommitTimeout)
	}
	return nil
}

// WithDefaults returns c with each zero setting set to its default.
func (c Config) WithDefaults() Config {
	defaults.Fill(&c, DefaultConfig())
	return c
}

// The rejection reasons, the values of the reason label.
const (
	ReasonMalformed       = "malformed"
	ReasonRateLimited     = "rate_limited"
	ReasonNoSecret        = "no_secret"
	ReasonBadMAC          = "bad_mac"
	ReasonReplay          = "replay"
	ReasonUnknownInstance = "unknown_instance"
	ReasonFenced          = "fenced"
	ReasonQueueFull       = "queue_full"
	ReasonCommitFailed    = "commit_failed"
)

// Metrics counts datagrams.
type Metrics struct {
	Accepted prometheus.Counter
	Rejected *prometheus.CounterVec
	Replies  prometheus.Counter
}

// NewMetrics returns the metrics, registered with reg unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_udp_beats_accepted_total",
			Help: "UDP beat datagrams received by this node whose beat was committed and applied.",
		}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_udp_beats_rejected_total",
			Help: "UDP beat datagrams received by this node that changed nothing, by reason: malformed, rate_limited, no_secret, bad_mac, replay, unknown_instance, fenced, queue_full, commit_failed.",
		}, []string{"reason"}),
		Replies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_udp_beat_replies_total",
			Help: "Reply frames this node sent to UDP beat senders that asked for one.",
		}),
	}
	for _, r := range []string{ReasonMalformed, ReasonRateLimited, ReasonNoSecret, ReasonBadMAC, ReasonReplay,
		ReasonUnknownInstance, ReasonFenced, ReasonQueueFull, ReasonCommitFailed} {
		m.Rejected.WithLabelValues(r) // every reason shows, at zero
	}
	if reg != nil {
		reg.MustRegister(m.Accepted, m.Rejected, m.Replies)
	}
	return m
}

// queued is an authenticated datagram waiting for the group commit.
type queued struct {
	rcv  Received
	key  []byte
	from net.Addr
}

// Server receives beat datagrams on a PacketConn, checks them and commits
// them. It owns a reader goroutine and cfg.Workers submitters, all stopped
// by Close.
type Server struct {
	cfg     Config
	conn    net.PacketConn
	commit  Committer
	replica Replica
	metrics *Metrics
	queue   chan queued

	srcMu   sync.Mutex
	sources map[netip.Addr]*rate.Limiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewServer starts serving conn; Close stops it and closes conn. metrics
// may be nil (unregistered ones).
func NewServer(cfg Config, conn net.PacketConn, commit Committer, replica Replica, metrics *Metrics) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, conn: conn, commit: commit, replica: replica, metrics: metrics,
		queue:   make(chan queued, cfg.QueueSize),
		sources: make(map[netip.Addr]*rate.Limiter),
		ctx:     ctx, cancel: cancel,
	}
	s.wg.Add(1 + cfg.Workers)
	go func() { defer s.wg.Done(); s.read() }()
	for range cfg.Workers {
		go func() { defer s.wg.Done(); s.work() }()
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Close stops the goroutines, closes the connection and waits.
func (s *Server) Close() error {
	s.cancel()
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *Server) reject(reason string) { s.metrics.Rejected.WithLabelValues(reason).Inc() }

// read receives datagrams until the connection is closed.
func (s *Server) read() {
	buf := make([]byte, MaxDatagramSize+1) // one more: an oversized datagram is seen as such
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.Logger.Warn("udp beat read failed", "error", err)
			continue
		}
		s.handle(buf[:n], from)
	}
}

// handle checks one datagram, cheapest check first, and queues it.
func (s *Server) handle(d []byte, from net.Addr) {
	if !s.allow(from) {
		s.reject(ReasonRateLimited)
		return
	}
	b, err := Parse(d)
	if err != nil {
		s.reject(ReasonMalformed)
		return
	}
	secret := s.replica.BeatSecret()
	if secret == nil {
		s.reject(ReasonNoSecret)
		return
	}
	key := DeriveKey(secret, b.Service, b.ID, b.Incarnation)
	if !Verify(d, key) {
		// No reply: an unauthenticated datagram gets nothing back.
		s.reject(ReasonBadMAC)
		return
	}
	// An early replay check on the local replica, whose floor only rises:
	// what it refuses the leader would refuse too. The FSM decides the rest.
	if inc, seq, ok := s.replica.LastUDPSeq(b.Service, b.ID); ok && inc == b.Incarnation && b.Seq <= seq {
		s.reject(ReasonReplay)
		s.reply(b, key, from, Outcome{Status: StatusReplay})
		return
	}
	q := queued{rcv: Received{Beat: b, Datagram: append([]byte(nil), d...)}, key: key, from: from}
	select {
	case s.queue <- q:
	default:
		s.reject(ReasonQueueFull)
		s.reply(b, key, from, Outcome{Status: StatusRetry})
	}
}

// allow applies the per-source rate.
func (s *Server) allow(from net.Addr) bool {
	ap, ok := from.(*net.UDPAddr)
	if !ok {
		return true
	}
	ip, _ := netip.AddrFromSlice(ap.IP)
	ip = ip.Unmap()
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	l, ok := s.sources[ip]
	if !ok {
		if len(s.sources) >= s.cfg.MaxSources {
			clear(s.sources)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.SourceRate), s.cfg.SourceBurst)
		s.sources[ip] = l
	}
	return l.Allow()
}

// work submits queued datagrams in batches until Close.
func (s *Server) work() {
	batch := make([]queued, 0, s.cfg.MaxBatch)
	beats := make([]Received, 0, s.cfg.MaxBatch)
	for {
		batch, beats = batch[:0], beats[:0]
		select {
		case q := <-s.queue:
			batch = append(batch, q)
		case <-s.ctx.Done():
			return
		}
	drain:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case q := <-s.queue:
				batch = append(batch, q)
			default:
				break drain
			}
		}
		for _, q := range batch {
			beats = append(beats, q.rcv)
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommitTimeout)
		outcomes, err := s.commit.UDPBeats(ctx, beats)
		cancel()
		if err != nil {
			s.cfg.Logger.Debug("udp beats not committed", "count", len(batch), "error", err)
			for _, q := range batch {
				s.reject(ReasonCommitFailed)
				s.reply(q.rcv.Beat, q.key, q.from, Outcome{Status: StatusRetry})
			}
			continue
		}
		for i, q := range batch {
			o := outcomes[i]
			switch o.Status {
			case StatusApplied:
				s.metrics.Accepted.Inc()
			case StatusUnknown:
				s.reject(ReasonUnknownInstance)
			case StatusFenced:
				s.reject(ReasonFenced)
			case StatusReplay:
				s.reject(ReasonReplay)
			}
			s.reply(q.rcv.Beat, q.key, q.from, o)
		}
	}
}

// reply sends the reply frame the sender asked for, if it asked.
func (s *Server) reply(b Beat, key []byte, to net.Addr, o Outcome) {
	if !b.WantsReply() {
		return
	}
	frame := AppendReply(make([]byte, 0, ReplySize), Reply{Status: o.Status, Seq: b.Seq, Current: o.Current}, key)
	if _, err := s.conn.WriteTo(frame, to); err != nil {
		s.cfg.Logger.Debug("udp beat reply not sent", "error", err)
		return
	}
	s.metrics.Replies.Inc()
}
