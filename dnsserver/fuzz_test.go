package dnsserver

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/regcenter/registry/fsm"
)

// FuzzReply answers arbitrary questions against a state with odd names:
// no panic, and every reply packs and fits its budget once truncated.
func FuzzReply(f *testing.F) {
	for _, seed := range []string{
		"orders.service.registry.", "a.b.service.registry.", `a\.b.service.registry.`,
		"x.y.z.a.b.service.registry.", "..service.registry.", "service.registry.",
		`\000.service.registry.`, "o1.orders.instance.registry.", "a..b.svc.instance.registry.",
		"registry.", "REGISTRY.", "example.", `\.\.\..instance.registry.`, "*.service.registry.",
	} {
		f.Add(seed, uint16(dns.TypeSRV), uint16(512))
		f.Add(seed, uint16(dns.TypeA), uint16(0))
	}
	st := newFakeState(append(many("orders", 50),
		healthy("a.b", "d1", "127.0.0.1:1", "k", "v", "", ""),
		healthy("svc", "a..b", "host.example:2"),
		healthy("svc", ".", "[::1]:3"),
		fsm.Instance{Service: "bad", ID: "x", Address: "no port", State: fsm.StateHealthy},
	)...)
	r := newResolver(Config{}.WithDefaults(), Deps{State: st})
	f.Fuzz(func(t *testing.T, name string, qtype, size uint16) {
		if _, ok := dns.IsDomainName(name); !ok {
			return
		}
		// Go through the wire, as a query reaches the server.
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		wire, err := q.Pack()
		if err != nil {
			return
		}
		req := new(dns.Msg)
		if err := req.Unpack(wire); err != nil {
			t.Fatalf("%q: a packed query does not unpack: %v", name, err)
		}
		budget := max(int(size), dns.MinMsgSize)
		m := r.reply(req, budget)
		m.Truncate(budget)
		buf, err := m.Pack()
		if err != nil {
			t.Fatalf("%q %d: reply does not pack: %v", name, qtype, err)
		}
		if len(buf) > budget {
			t.Fatalf("%q %d: %d bytes over a budget of %d", name, qtype, len(buf), budget)
		}
	})
}
