package dnsserver

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regcenter/registry/fsm"
)

// fakeState is a StateReader over a fixed set of instances.
type fakeState struct {
	mu    sync.Mutex
	insts map[string]map[string]fsm.Instance
}

func newFakeState(insts ...fsm.Instance) *fakeState {
	f := &fakeState{insts: make(map[string]map[string]fsm.Instance)}
	for _, in := range insts {
		if f.insts[in.Service] == nil {
			f.insts[in.Service] = make(map[string]fsm.Instance)
		}
		f.insts[in.Service][in.ID] = in
	}
	return f
}

func (f *fakeState) AppliedIndex() uint64 { return 42 }

func (f *fakeState) ScanService(service string, fn func(*fsm.Instance)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, in := range f.insts[service] {
		fn(&in)
	}
	return len(f.insts[service]) > 0
}

func (f *fakeState) Instance(service, id string) (fsm.Instance, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.insts[service][id]
	return in, ok
}

func healthy(service, id, addr string, md ...string) fsm.Instance {
	in := fsm.Instance{Service: service, ID: id, Address: addr, State: fsm.StateHealthy}
	for i := 0; i+1 < len(md); i += 2 {
		if in.Metadata == nil {
			in.Metadata = map[string]string{}
		}
		in.Metadata[md[i]] = md[i+1]
	}
	return in
}

func suspect(service, id, addr string) fsm.Instance {
	in := healthy(service, id, addr)
	in.State = fsm.StateSuspect
	return in
}

// start serves st on 127.0.0.1:0; cfg's zero fields take the defaults.
func start(t *testing.T, cfg Config, deps Deps) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// ask sends one query over net ("udp" or "tcp"); bufsize > 0 adds EDNS0.
func ask(t *testing.T, s *Server, network, name string, qtype uint16, bufsize uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if bufsize > 0 {
		q.SetEdns0(bufsize, false)
	}
	c := &dns.Client{Net: network, Timeout: 10 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(q, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func answers(m *dns.Msg, section []dns.RR) []string {
	var out []string
	for _, rr := range section {
		h := rr.Header()
		h.Ttl = 0
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	slices.Sort(out)
	return out
}

func TestServiceAnswersHealthyInstancesOnly(t *testing.T) {
	st := newFakeState(
		healthy("orders", "o1", "127.0.0.1:8080"),
		healthy("orders", "o2", "127.0.0.2:8081"),
		healthy("orders", "o3", "127.0.0.2:8082"), // same IP: one A record
		healthy("orders", "o6", "[::1]:8086"),
		suspect("orders", "o4", "127.0.0.4:8084"),
		healthy("payments", "p1", "127.0.0.9:9000"),
	)
	s := start(t, Config{}, Deps{State: st})

	a := ask(t, s, "udp", "orders.service.registry.", dns.TypeA, 0)
	if a.Rcode != dns.RcodeSuccess || !a.Authoritative || a.RecursionAvailable {
		t.Fatalf("A: rcode %s aa %v ra %v, want NOERROR aa without ra", dns.RcodeToString[a.Rcode], a.Authoritative, a.RecursionAvailable)
	}
	want := []string{
		"orders.service.registry. 0 IN A 127.0.0.1",
		"orders.service.registry. 0 IN A 127.0.0.2",
	}
	if diff := cmp.Diff(want, answers(a, a.Answer)); diff != "" {
		t.Errorf("A answer (-want +got):\n%s", diff)
	}
	aaaa := ask(t, s, "udp", "orders.service.registry.", dns.TypeAAAA, 0)
	if diff := cmp.Diff([]string{"orders.service.registry. 0 IN AAAA ::1"}, answers(aaaa, aaaa.Answer)); diff != "" {
		t.Errorf("AAAA answer (-want +got):\n%s", diff)
	}

	srv := ask(t, s, "udp", "orders.service.registry.", dns.TypeSRV, 1232)
	wantSRV := []string{
		"orders.service.registry. 0 IN SRV 1 1 8080 o1.orders.instance.registry.",
		"orders.service.registry. 0 IN SRV 1 1 8081 o2.orders.instance.registry.",
		"orders.service.registry. 0 IN SRV 1 1 8082 o3.orders.instance.registry.",
		"orders.service.registry. 0 IN SRV 1 1 8086 o6.orders.instance.registry.",
	}
	if diff := cmp.Diff(wantSRV, answers(srv, srv.Answer)); diff != "" {
		t.Errorf("SRV answer (-want +got):\n%s", diff)
	}
	wantExtra := []string{
		"o1.orders.instance.registry. 0 IN A 127.0.0.1",
		"o2.orders.instance.registry. 0 IN A 127.0.0.2",
		"o3.orders.instance.registry. 0 IN A 127.0.0.2",
		"o6.orders.instance.registry. 0 IN AAAA ::1",
	}
	if diff := cmp.Diff(wantExtra, answers(srv, withoutOPT(srv.Extra))); diff != "" {
		t.Errorf("SRV additional (-want +got):\n%s", diff)
	}
	if srv.IsEdns0() == nil {
		t.Error("an EDNS0 query got a reply without OPT")
	}

	inst := ask(t, s, "tcp", "o2.orders.instance.registry.", dns.TypeA, 0)
	if diff := cmp.Diff([]string{"o2.orders.instance.registry. 0 IN A 127.0.0.2"}, answers(inst, inst.Answer)); diff != "" {
		t.Errorf("instance A (-want +got):\n%s", diff)
	}
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

func TestRcodes(t *testing.T) {
	st := newFakeState(
		healthy("orders", "o1", "127.0.0.1:8080", "zone", "a"),
		suspect("sleepy", "s1", "127.0.0.1:8080"),
		suspect("orders", "o2", "127.0.0.2:8080"),
	)
	s := start(t, Config{}, Deps{State: st})
	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
		soa     bool
	}{
		{"unknown.service.registry.", dns.TypeA, dns.RcodeNameError, 0, true},
		{"unknown.service.registry.", dns.TypeSRV, dns.RcodeNameError, 0, true},
		{"sleepy.service.registry.", dns.TypeA, dns.RcodeSuccess, 0, true},   // known, nothing healthy
		{"sleepy.service.registry.", dns.TypeSRV, dns.RcodeSuccess, 0, true}, // known, nothing healthy
		{"orders.service.registry.", dns.TypeAAAA, dns.RcodeSuccess, 0, true},
		{"orders.service.registry.", dns.TypeTXT, dns.RcodeSuccess, 0, true},
		{"orders.service.registry.", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"ORDERS.service.registry.", dns.TypeA, dns.RcodeNameError, 0, true}, // names are case-sensitive
		{"orders.SERVICE.Registry.", dns.TypeA, dns.RcodeSuccess, 1, false},  // the zone is not
		{"o9.orders.instance.registry.", dns.TypeA, dns.RcodeNameError, 0, true},
		{"o2.orders.instance.registry.", dns.TypeA, dns.RcodeSuccess, 0, true}, // SUSPECT
		{"o1.orders.instance.registry.", dns.TypeSRV, dns.RcodeSuccess, 1, false},
		{"orders.instance.registry.", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"service.registry.", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"zone.orders.service.registry.", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"a.zone.orders.service.registry.", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"b.zone.orders.service.registry.", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"a.zone.unknown.service.registry.", dns.TypeA, dns.RcodeNameError, 0, true},
		{"registry.", dns.TypeSOA, dns.RcodeSuccess, 1, false},
		{"registry.", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"foo.registry.", dns.TypeA, dns.RcodeNameError, 0, true},
		{"example.com.", dns.TypeA, dns.RcodeRefused, 0, false},
		{"orders.service.registry.example.", dns.TypeA, dns.RcodeRefused, 0, false},
		{".", dns.TypeNS, dns.RcodeRefused, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			r := ask(t, s, "udp", tt.name, tt.qtype, 0)
			if r.Rcode != tt.rcode || len(r.Answer) != tt.answers {
				t.Fatalf("rcode %s with %d answers, want %s with %d:\n%v", dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tt.rcode], tt.answers, r)
			}
			gotSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA && r.Ns[0].Header().Name == "registry."
			if gotSOA != tt.soa {
				t.Fatalf("authority %v, want the SOA: %v", r.Ns, tt.soa)
			}
			if r.RecursionAvailable {
				t.Error("RA set: the server does not recurse")
			}
		})
	}
}

func TestMetadataFilter(t *testing.T) {
	st := newFakeState(
		healthy("orders", "o1", "127.0.0.1:1", "zone", "eu-west"),
		healthy("orders", "o2", "127.0.0.2:2", "zone", "us-east"),
		healthy("orders", "o3", "127.0.0.3:3", "zone", "eu-west", "ver.major", "2"),
		healthy("a.b", "d1", "127.0.0.4:4"), // a dotted service name
	)
	s := start(t, Config{}, Deps{State: st})
	r := ask(t, s, "udp", "eu-west.zone.orders.service.registry.", dns.TypeSRV, 0)
	want := []string{
		"eu-west.zone.orders.service.registry. 0 IN SRV 1 1 1 o1.orders.instance.registry.",
		"eu-west.zone.orders.service.registry. 0 IN SRV 1 1 3 o3.orders.instance.registry.",
	}
	if diff := cmp.Diff(want, answers(r, r.Answer)); diff != "" {
		t.Errorf("filtered SRV (-want +got):\n%s", diff)
	}
	r = ask(t, s, "udp", `2.ver\.major.orders.service.registry.`, dns.TypeA, 0)
	if diff := cmp.Diff([]string{`2.ver\.major.orders.service.registry. 0 IN A 127.0.0.3`}, answers(r, r.Answer)); diff != "" {
		t.Errorf("filter on a dotted key (-want +got):\n%s", diff)
	}
	for _, name := range []string{"a.b.service.registry.", `a\.b.service.registry.`} {
		r = ask(t, s, "udp", name, dns.TypeSRV, 0)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Target != "d1.a.b.instance.registry." {
			t.Errorf("%s: %v, want the SRV of d1", name, r.Answer)
		}
	}
	r = ask(t, s, "udp", "d1.a.b.instance.registry.", dns.TypeA, 0)
	if len(r.Answer) != 1 {
		t.Errorf("the instance of a dotted service: %v, want its A record", r)
	}
}

func TestHostNameAddresses(t *testing.T) {
	st := newFakeState(
		healthy("web", "w1", "web1.example.internal:80"),
		healthy("web", "w2", "127.0.0.2:80"),
	)
	s := start(t, Config{}, Deps{State: st})
	r := ask(t, s, "udp", "web.service.registry.", dns.TypeA, 0)
	if diff := cmp.Diff([]string{"web.service.registry. 0 IN A 127.0.0.2"}, answers(r, r.Answer)); diff != "" {
		t.Errorf("A leaves host names out (-want +got):\n%s", diff)
	}
	r = ask(t, s, "udp", "web.service.registry.", dns.TypeSRV, 0)
	if diff := cmp.Diff([]string{
		"w1.web.instance.registry. 0 IN CNAME web1.example.internal.",
		"w2.web.instance.registry. 0 IN A 127.0.0.2",
	}, answers(r, r.Extra)); diff != "" {
		t.Errorf("SRV additional (-want +got):\n%s", diff)
	}
	r = ask(t, s, "udp", "w1.web.instance.registry.", dns.TypeA, 0)
	if diff := cmp.Diff([]string{"w1.web.instance.registry. 0 IN CNAME web1.example.internal."}, answers(r, r.Answer)); diff != "" {
		t.Errorf("instance A (-want +got):\n%s", diff)
	}
}

func TestIDsThatAreNotDNSNames(t *testing.T) {
	long := strings.Repeat("x", 64) // a label over 63 bytes
	st := newFakeState(
		healthy("svc", long, "127.0.0.1:1"),
		healthy("svc", "a..b", "127.0.0.2:2"),
		healthy("svc", "ok:1_x", "127.0.0.3:3"),
	)
	s := start(t, Config{}, Deps{State: st})
	r := ask(t, s, "udp", "svc.service.registry.", dns.TypeSRV, 0)
	want := []string{"svc.service.registry. 0 IN SRV 1 1 3 ok:1_x.svc.instance.registry."}
	if diff := cmp.Diff(want, answers(r, r.Answer)); diff != "" {
		t.Errorf("SRV leaves out targets that are not DNS names (-want +got):\n%s", diff)
	}
	r = ask(t, s, "udp", "svc.service.registry.", dns.TypeA, 0)
	if len(r.Answer) != 3 {
		t.Errorf("A: %d records, want all 3 addresses", len(r.Answer))
	}
}

func TestTTLAndSOA(t *testing.T) {
	st := newFakeState(healthy("orders", "o1", "127.0.0.1:8080"))
	s := start(t, Config{TTL: 30 * time.Second, Domain: "Reg.Example"}, Deps{State: st})
	r := ask(t, s, "udp", "orders.service.reg.example.", dns.TypeSRV, 0)
	for _, rr := range append(r.Answer, r.Extra...) {
		if rr.Header().Ttl != 30 {
			t.Errorf("%v: TTL %d, want 30", rr, rr.Header().Ttl)
		}
	}
	r = ask(t, s, "udp", "nope.service.reg.example.", dns.TypeSRV, 0)
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok || soa.Minttl != 30 || soa.Serial != 42 || soa.Hdr.Name != "reg.example." {
		t.Errorf("SOA %v, want zone reg.example., serial 42 (the applied index), minimum TTL 30", r.Ns)
	}
}

func many(service string, n int) []fsm.Instance {
	var out []fsm.Instance
	for i := range n {
		out = append(out, healthy(service, fmt.Sprintf("%s-%03d", service, i), fmt.Sprintf("127.0.%d.%d:%d", i/250, i%250+1, 10000+i)))
	}
	return out
}

func TestTruncationOverUDPAndFullAnswerOverTCP(t *testing.T) {
	s := start(t, Config{}, Deps{State: newFakeState(many("big", 200)...)})
	for _, tt := range []struct {
		bufsize uint16
		limit   int
	}{{0, 512}, {1232, 1232}, {4096, 4096}, {65535, 4096}} {
		r := ask(t, s, "udp", "big.service.registry.", dns.TypeSRV, tt.bufsize)
		if !r.Truncated {
			t.Errorf("UDP bufsize %d: TC not set with %d of 200 SRV records", tt.bufsize, len(r.Answer))
		}
		r.Compress = true // as it came: Len counts uncompressed otherwise
		if n := r.Len(); n > tt.limit {
			t.Errorf("UDP bufsize %d: reply of %d bytes", tt.bufsize, n)
		}
		if len(r.Answer) == 0 || len(r.Answer) >= 200 {
			t.Errorf("UDP bufsize %d: %d answers, want some but not all", tt.bufsize, len(r.Answer))
		}
	}
	small := ask(t, s, "udp", "big.service.registry.", dns.TypeSRV, 0)
	bigger := ask(t, s, "udp", "big.service.registry.", dns.TypeSRV, 4096)
	if len(bigger.Answer) <= len(small.Answer) {
		t.Errorf("EDNS0 4096 got %d records, no more than without EDNS0 (%d)", len(bigger.Answer), len(small.Answer))
	}
	full := ask(t, s, "tcp", "big.service.registry.", dns.TypeSRV, 0)
	if full.Truncated || len(full.Answer) != 200 || len(full.Extra) != 200 {
		t.Errorf("TCP: TC %v, %d SRV and %d additional records, want 200 each untruncated", full.Truncated, len(full.Answer), len(full.Extra))
	}
	a := ask(t, s, "tcp", "big.service.registry.", dns.TypeA, 0)
	if len(a.Answer) != 200 {
		t.Errorf("TCP A: %d records, want 200", len(a.Answer))
	}
}

func TestAnswersAreShuffled(t *testing.T) {
	s := start(t, Config{}, Deps{State: newFakeState(many("svc", 20)...)})
	first := ask(t, s, "udp", "svc.service.registry.", dns.TypeA, 4096)
	for range 10 {
		r := ask(t, s, "udp", "svc.service.registry.", dns.TypeA, 4096)
		if fmt.Sprint(r.Answer) != fmt.Sprint(first.Answer) {
			return
		}
	}
	t.Error("11 answers of 20 records came in the same order")
}

func TestReadsFollowTheAnonymousRules(t *testing.T) {
	st := newFakeState(
		healthy("public", "p1", "127.0.0.1:1"),
		healthy("secret", "s1", "127.0.0.2:2"),
	)
	s := start(t, Config{}, Deps{State: st, ReadAllowed: func(svc string) bool { return svc == "public" }})
	if r := ask(t, s, "udp", "public.service.registry.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("readable service: %v", r)
	}
	for _, name := range []string{"secret.service.registry.", "s1.secret.instance.registry.", "x.y.secret.service.registry."} {
		if r := ask(t, s, "udp", name, dns.TypeA, 0); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s: %s with %d answers, want NXDOMAIN as if it did not exist", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := start(t, Config{}, Deps{State: newFakeState(healthy("orders", "o1", "127.0.0.1:1")), Metrics: m})
	ask(t, s, "udp", "orders.service.registry.", dns.TypeSRV, 0)
	ask(t, s, "udp", "orders.service.registry.", dns.TypeSRV, 0)
	ask(t, s, "udp", "nope.service.registry.", dns.TypeA, 0)
	ask(t, s, "tcp", "example.com.", dns.TypeTXT, 0)
	for _, tt := range []struct {
		qtype, rcode string
		want         float64
	}{{"SRV", "NOERROR", 2}, {"A", "NXDOMAIN", 1}, {"other", "REFUSED", 1}} {
		if got := testutil.ToFloat64(m.queries.WithLabelValues(tt.qtype, tt.rcode)); got != tt.want {
			t.Errorf("registry_dns_queries_total{qtype=%q,rcode=%q} = %v, want %v", tt.qtype, tt.rcode, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(reg, "registry_dns_query_duration_seconds"); n != 1 {
		t.Errorf("latency histogram: %d series, want 1", n)
	}
}

func TestBadVersionAndClass(t *testing.T) {
	s := start(t, Config{}, Deps{State: newFakeState(healthy("orders", "o1", "127.0.0.1:1"))})
	q := new(dns.Msg)
	q.SetQuestion("orders.service.registry.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	r, _, err := (&dns.Client{}).Exchange(q, s.Addr())
	if err != nil || r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %v %v, want BADVERS", r, err)
	}
	q = new(dns.Msg)
	q.SetQuestion("orders.service.registry.", dns.TypeA)
	q.Question[0].Qclass = dns.ClassCHAOS
	r, _, err = (&dns.Client{}).Exchange(q, s.Addr())
	if err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("class CH: %v %v, want REFUSED", r, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Addr: "127.0.0.1"}, "dns addr"},
		{Config{Domain: "a..b"}, "dns domain"},
		{Config{Domain: "."}, "dns domain"},
		{Config{TTL: 1500 * time.Millisecond}, "dns ttl"},
		{Config{TTL: -time.Second}, "dns ttl"},
		{Config{TTL: 25 * time.Hour}, "dns ttl"},
	}
	for _, tt := range tests {
		err := tt.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want an error naming %q", tt.cfg, err, tt.want)
		}
	}
	if err := (Config{Addr: "127.0.0.1:8600", TTL: 5 * time.Second}).WithDefaults().Validate(); err != nil {
		t.Errorf("a good config: %v", err)
	}
	if d := DefaultConfig(); d.Enabled() || d.TTL != 0 || d.Domain != "registry." {
		t.Errorf("defaults %+v: want off, TTL 0, domain registry.", d)
	}
}
