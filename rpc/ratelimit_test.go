package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/regcenter/registry/fsm"
)

func TestClientsLimitEachAddressAndSayWhenToRetry(t *testing.T) {
	c := newClients(Config{WriteRate: 10, WriteBurst: 2, MaxClients: 8})
	a, b := addrKey(netip.MustParseAddr("10.0.0.1")), addrKey(netip.MustParseAddr("10.0.0.2"))
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := c.allow(a, now); !ok {
			t.Fatalf("write %d of the burst refused", i+1)
		}
	}
	ok, wait := c.allow(a, now)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("third write at once: allowed %v, retry after %v; want refused with a delay in (0, 100ms]", ok, wait)
	}
	if ok, _ := c.allow(b, now); !ok {
		t.Errorf("another address was refused: limits are per address")
	}
	if ok, _ := c.allow(a, now.Add(wait)); !ok {
		t.Errorf("a write after the retry delay (%v) was refused", wait)
	}
}

func TestClientsForgetTheLeastRecentlySeenBeyondTheirBound(t *testing.T) {
	const bound = 16
	c := newClients(Config{WriteRate: 1, WriteBurst: 1, MaxClients: bound})
	now := time.Unix(1000, 0)
	first := addrKey(netip.MustParseAddr("10.0.0.1"))
	c.allow(first, now)
	for i := range 10 * bound {
		c.allow(addrKey(netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", i/256, i%256))), now)
		if n := c.tracked(); n > bound {
			t.Fatalf("%d addresses tracked, the bound is %d", n, bound)
		}
	}
	// The first address was forgotten: it starts with a full bucket again.
	if ok, _ := c.allow(first, now); !ok {
		t.Errorf("the least recently seen address was not forgotten")
	}
}

func TestClientWatchesAreCountedPerAddressAndReleased(t *testing.T) {
	c := newClients(Config{WriteRate: 1, WriteBurst: 1, MaxClients: 1})
	a := addrKey(netip.MustParseAddr("10.0.0.1"))
	for i := range 2 {
		if !c.addWatch(a, 2) {
			t.Fatalf("watch %d within the limit refused", i+1)
		}
	}
	if c.addWatch(a, 2) {
		t.Fatal("a third watch with a limit of 2 was allowed")
	}
	c.doneWatch(a)
	if !c.addWatch(a, 2) {
		t.Fatal("a released slot was not given back")
	}
	c.doneWatch(a)
	c.doneWatch(a)
	if len(c.watches) != 0 {
		t.Errorf("%d addresses without watches still tracked", len(c.watches))
	}
}

func TestIPv6ClientsAreCountedByTheirSlash64(t *testing.T) {
	got := clientKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	if want := netip.MustParseAddr("2001:db8:1:2::"); got != want {
		t.Errorf("clientKey = %v, want %v", got, want)
	}
	if got := clientKey(netip.MustParseAddr("::ffff:10.0.0.1")); got != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("clientKey of a v4-mapped address = %v, want 10.0.0.1", got)
	}
}

// namedMember is fakeState with member n3 published under a host name.
type namedMember struct{ *fakeState }

func (s namedMember) Node(id string) (fsm.NodeMeta, bool) {
	switch id {
	case "n3":
		return fsm.NodeMeta{NodeID: id, GRPCAddress: "localhost:7001"}, true
	case "n4":
		return fsm.NodeMeta{NodeID: id, GRPCAddress: "127.197.1.2:7001"}, true
	}
	return s.fakeState.Node(id)
}

func TestCallsAreCountedAgainstTheRightClient(t *testing.T) {
	s := &Server{state: namedMember{&fakeState{}}, gatewayToken: "tok", clients: newClients(DefaultConfig())}
	call := func(from string, md ...string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))})
		return metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
	}
	tests := []struct {
		name string
		ctx  context.Context
		want string // "" for not counted
	}{
		{"a client with an ACL token", asCaller(call("10.0.0.9:5000"), "acc-1"), "token acc-1"},
		{"the gateway for an HTTP client with a token", asCaller(call("127.0.0.1:5000", GatewayTokenKey, "tok", ClientAddrKey, "192.0.2.7"), "acc-2"), "token acc-2"},
		{"forwarded by a member, with a token", asCaller(call("10.1.1.1:5000", forwardedKey, "n1"), "acc-1"), ""},
		{"a client", call("10.0.0.9:5000"), "address 10.0.0.9"},
		{"forwarded by member n1 from its address", call("10.1.1.1:5000", forwardedKey, "n1"), ""},
		{"a forwarding mark from another address", call("10.0.0.9:5000", forwardedKey, "n1"), "address 10.0.0.9"},
		{"a forwarding mark naming no member", call("10.1.1.1:5000", forwardedKey, "n9"), "address 10.1.1.1"},
		{"forwarded by a member published by name", call("127.0.0.1:5000", forwardedKey, "n3"), ""},
		{"forwarded by a member on another loopback address", call("127.0.0.1:5000", forwardedKey, "n4"), ""},
		{"the gateway for an HTTP client", call("127.0.0.1:5000", GatewayTokenKey, "tok", ClientAddrKey, "192.0.2.7"), "address 192.0.2.7"},
		{"a wrong gateway token", call("127.0.0.1:5000", GatewayTokenKey, "guess", ClientAddrKey, "192.0.2.7"), "address 127.0.0.1"},
		{"the token from off the machine", call("10.0.0.9:5000", GatewayTokenKey, "tok", ClientAddrKey, "192.0.2.7"), "address 10.0.0.9"},
		{"an IPv6 client, by /64", call("[2001:db8::5]:5000"), "address 2001:db8::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, counted := s.client(tt.ctx)
			got := ""
			if counted {
				got = addr.String()
			}
			if got != tt.want {
				t.Errorf("counted against %q, want %q", got, tt.want)
			}
		})
	}
}

// asCaller is ctx as the ACL interceptor leaves it for a call whose token
// resolved to accessor.
func asCaller(ctx context.Context, accessor string) context.Context {
	return context.WithValue(ctx, callerKey{}, &caller{accessor: accessor})
}

// With ACLs on, writes and watches are counted per token: one token shares
// its budget across every address it is used from, and two tokens on one
// address each have their own; a call without a token is counted by its
// address.
func TestWritesAndWatchesAreCountedPerTokenWithACLs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WriteRate, cfg.WriteBurst, cfg.MaxWatchesPerClient = 0.001, 2, 1
	s := &Server{cfg: cfg, state: &fakeState{}, clients: newClients(cfg), metrics: NewMetrics(prometheus.NewRegistry())}
	from := func(addr string) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))})
	}
	ordersA, ordersB := asCaller(from("10.0.0.1:5000"), "orders"), asCaller(from("10.0.0.2:5000"), "orders")
	payments := asCaller(from("10.0.0.1:5001"), "payments")

	for i, ctx := range []context.Context{ordersA, ordersB} {
		if err := s.admitWrite(ctx); err != nil {
			t.Fatalf("write %d of the orders token's burst of 2: %v", i+1, err)
		}
	}
	err := s.admitWrite(ordersA)
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.Client != "token orders" || rl.RetryAfter <= 0 {
		t.Fatalf("third write of the orders token, from either address: %v; want a RateLimitedError for token orders with a delay", err)
	}
	if strings.Contains(err.Error(), "10.0.0.") {
		t.Errorf("the refusal names an address, not the token: %v", err)
	}
	if err := s.admitWrite(payments); err != nil {
		t.Errorf("another token from the orders token's address was refused: %v", err)
	}
	if err := s.admitWrite(from("10.0.0.1:5002")); err != nil {
		t.Errorf("a call without a token from that address was refused: %v", err)
	}

	release, err := s.admitWatch(ordersA)
	if err != nil {
		t.Fatalf("first watch of the orders token: %v", err)
	}
	if _, err := s.admitWatch(ordersB); !errors.Is(err, ErrTooManyClientWatches) || !strings.Contains(err.Error(), "token orders") {
		t.Errorf("second watch of the orders token from another address: %v; want ErrTooManyClientWatches naming the token", err)
	}
	if rel, err := s.admitWatch(payments); err != nil {
		t.Errorf("a watch of another token from the same address: %v", err)
	} else {
		rel()
	}
	release()
	if rel, err := s.admitWatch(ordersB); err != nil {
		t.Errorf("a watch of the orders token after its first was released: %v", err)
	} else {
		rel()
	}
}
