package rpc

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// The metadata the node's own HTTP gateway adds to each call: the HTTP
// client's address, and the gateway's token (Server.GatewayToken) that
// makes the address believed. A call without the right token is attributed
// to its peer address.
const (
	ClientAddrKey   = "x-registry-client-addr"
	GatewayTokenKey = "x-registry-gateway-token"
)

// RateLimitedError is a write refused by the per-client write rate; it
// wraps ErrRateLimited and says when to retry.
type RateLimitedError struct {
	// Client names what the write was counted against: "token <accessor
	// id>" or "address <ip>" (never a secret).
	Client     string
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%v: %s, retry after %v", ErrRateLimited, e.Client, e.RetryAfter)
}

// limitKey is what a client's writes and watches are counted against: the
// accessor id of its ACL token when the node enforces ACLs and the call
// carries one (all the processes sharing a token share its budget, from
// whatever address), otherwise its address (clientKey).
type limitKey struct {
	accessor string
	addr     netip.Addr
}

func tokenKey(accessor string) limitKey { return limitKey{accessor: accessor} }
func addrKey(a netip.Addr) limitKey     { return limitKey{addr: clientKey(a)} }

func (k limitKey) String() string {
	if k.accessor != "" {
		return "token " + k.accessor
	}
	return "address " + k.addr.String()
}

func (e *RateLimitedError) Unwrap() error { return ErrRateLimited }

// clientKey is what limits are counted by: an IPv4 address, or an IPv6
// address's /64 (one host usually holds a whole /64).
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// clients tracks the write rate and the watches of each client (token or
// address, see limitKey). Rate limiters are kept for at most max clients,
// the least recently seen forgotten first (a forgotten client starts with
// a full bucket); watch counts exist only while a client has watches.
type clients struct {
	rate  rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	lru     *list.List // of *clientRate, most recent first
	byKey   map[limitKey]*list.Element
	watches map[limitKey]int
	names   map[string]resolvedName // members' host names
}

type resolvedName struct {
	ips []netip.Addr
	at  time.Time
}

type clientRate struct {
	key limitKey
	lim *rate.Limiter
}

func newClients(c Config) *clients {
	return &clients{
		rate: rate.Limit(c.WriteRate), burst: c.WriteBurst, max: c.MaxClients,
		lru: list.New(), byKey: map[limitKey]*list.Element{}, watches: map[limitKey]int{},
		names: map[string]resolvedName{},
	}
}

// allow takes one write of key's budget at now, or returns how long until
// one is available.
func (c *clients) allow(key limitKey, now time.Time) (bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cr *clientRate
	if e, ok := c.byKey[key]; ok {
		c.lru.MoveToFront(e)
		cr = e.Value.(*clientRate)
	} else {
		cr = &clientRate{key: key, lim: rate.NewLimiter(c.rate, c.burst)}
		c.byKey[key] = c.lru.PushFront(cr)
		for c.lru.Len() > c.max {
			old := c.lru.Remove(c.lru.Back()).(*clientRate)
			delete(c.byKey, old.key)
		}
	}
	if cr.lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - cr.lim.TokensAt(now)
	return false, max(time.Duration(missing/float64(c.rate)*float64(time.Second)), time.Millisecond)
}

// tracked is the number of clients with a rate limiter.
func (c *clients) tracked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// addWatch counts a watch of key unless it has limit already.
func (c *clients) addWatch(key limitKey, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watches[key] >= limit {
		return false
	}
	c.watches[key]++
	return true
}

func (c *clients) doneWatch(key limitKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watches[key]--; c.watches[key] <= 0 {
		delete(c.watches, key)
	}
}

// newGatewayToken returns a random token for the node's HTTP gateway.
func newGatewayToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// GatewayToken is the token the node's own HTTP gateway sends with
// ClientAddrKey so that the HTTP client's address, not the gateway's, is
// the one limited. It never leaves the node.
func (s *Server) GatewayToken() string { return s.gatewayToken }

// client returns what a call is counted against (see limitKey), and false
// when it is not counted: a call forwarded by a member of the cluster (the
// node the client reached counted it) or one without a peer address.
func (s *Server) client(ctx context.Context) (limitKey, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return limitKey{}, false
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return limitKey{}, false
	}
	addr := ap.Addr().Unmap()
	md, _ := metadata.FromIncomingContext(ctx)
	if by := md.Get(forwardedKey); len(by) > 0 && s.isMember(ctx, by[0], addr) {
		return limitKey{}, false
	}
	// The ACL interceptor put the caller's token there (the accessor id it
	// resolved to when the call began).
	if c, ok := ctx.Value(callerKey{}).(*caller); ok && c.accessor != "" {
		return tokenKey(c.accessor), true
	}
	if tok := md.Get(GatewayTokenKey); len(tok) == 1 && tok[0] == s.gatewayToken && addr.IsLoopback() {
		if c := md.Get(ClientAddrKey); len(c) == 1 {
			if a, err := netip.ParseAddr(c[0]); err == nil {
				addr = a.Unmap()
			}
		}
	}
	return addrKey(addr), true
}

// isMember reports whether addr is the gRPC address host of node id, a
// member whose address record is in the registry. A name is resolved.
func (s *Server) isMember(ctx context.Context, id string, addr netip.Addr) bool {
	meta, ok := s.state.Node(id)
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(meta.GRPCAddress)
	if err != nil {
		return false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		// Any loopback address is this machine: a connection to
		// 127.1.2.3 leaves from 127.0.0.1.
		return a.Unmap() == addr || a.IsLoopback() && addr.IsLoopback()
	}
	for _, ip := range s.clients.resolve(ctx, host) {
		if ip == addr {
			return true
		}
	}
	return false
}

// memberNameTTL is how long a member's resolved host name is kept.
const memberNameTTL = 30 * time.Second

// resolve returns the addresses of a member's host name, from a cache kept
// memberNameTTL (the names are the members' own, a handful), so that
// forwarded calls do not each wait on DNS. A failed lookup is cached too.
func (c *clients) resolve(ctx context.Context, host string) []netip.Addr {
	c.mu.Lock()
	r, ok := c.names[host]
	c.mu.Unlock()
	if ok && time.Since(r.at) < memberNameTTL {
		return r.ips
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	c.mu.Lock()
	c.names[host] = resolvedName{ips: ips, at: time.Now()}
	c.mu.Unlock()
	return ips
}

// admitWrite counts one write against the calling client's rate, or
// fails with a *RateLimitedError.
func (s *Server) admitWrite(ctx context.Context) error {
	key, counted := s.client(ctx)
	if !counted {
		return nil
	}
	if ok, wait := s.clients.allow(key, time.Now()); !ok { // local time: the rate is this node's
		s.metrics.rateLimited.Inc()
		return &RateLimitedError{Client: key.String(), RetryAfter: wait}
	}
	return nil
}

// admitWatch takes one of the calling client's watch slots; release gives
// it back.
func (s *Server) admitWatch(ctx context.Context) (release func(), err error) {
	key, counted := s.client(ctx)
	if !counted {
		return func() {}, nil
	}
	if !s.clients.addWatch(key, s.cfg.MaxWatchesPerClient) {
		return nil, fmt.Errorf("%w: %v has %d, the limit (--max-watches-per-client)",
			ErrTooManyClientWatches, key, s.cfg.MaxWatchesPerClient)
	}
	return func() { s.clients.doneWatch(key) }, nil
}
