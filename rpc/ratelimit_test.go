package rpc

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestClientsLimitEachAddressAndSayWhenToRetry(t *testing.T) {
	c := newClients(Config{WriteRate: 10, WriteBurst: 2, MaxClients: 8})
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
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
	first := netip.MustParseAddr("10.0.0.1")
	c.allow(first, now)
	for i := range 10 * bound {
		c.allow(netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", i/256, i%256)), now)
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
	a := netip.MustParseAddr("10.0.0.1")
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
