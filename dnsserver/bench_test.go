package dnsserver

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// BenchmarkReply is the CPU of one reply, built from a real replica and
// truncated to a UDP budget, without the network.
func BenchmarkReply(b *testing.B) {
	for _, n := range []int{20, 300} {
		f := fsmtest.New(b, fsm.Config{})
		for i := range n {
			fsmtest.Apply(b, f, uint64(i+1), &fsmpb.Register{
				Service: "svc", Id: fmt.Sprintf("i%04d", i), Address: fmt.Sprintf("127.1.%d.%d:%d", i/250, i%250+1, 10000+i),
				Incarnation: 1, BeatIntervalNs: 1e9, SuspectAfterNs: 3e9, TtlNs: 10e9, NowUnixNs: 1,
			})
		}
		r := newResolver(Config{}.WithDefaults(), Deps{State: f})
		for _, qtype := range []uint16{dns.TypeA, dns.TypeSRV} {
			b.Run(fmt.Sprintf("%d instances/%s", n, dns.TypeToString[qtype]), func(b *testing.B) {
				req := new(dns.Msg)
				req.SetQuestion("svc.service.registry.", qtype)
				req.SetEdns0(1232, false)
				b.ReportAllocs()
				for b.Loop() {
					m := r.reply(req, 1232)
					m.Truncate(1232)
					if _, err := m.Pack(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
