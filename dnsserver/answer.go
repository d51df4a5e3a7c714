package dnsserver

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/regcenter/registry/fsm"
)

// StateReader reads the local replica. *fsm.FSM implements it.
type StateReader interface {
	// AppliedIndex is the SOA serial (its low 32 bits).
	AppliedIndex() uint64
	// ScanService calls fn for each instance of service under the read
	// lock, in no particular order, and reports whether the service has
	// any instance.
	ScanService(service string, fn func(*fsm.Instance)) bool
	// Instance returns one instance.
	Instance(service, id string) (fsm.Instance, bool)
}

// The labels under the zone that name services and instances.
const (
	serviceLabel  = "service"
	instanceLabel = "instance"
)

// Minimal wire sizes of the records a reply carries, to cap how many are
// built before Truncate trims to the byte budget: a compressed owner (2),
// type, class, TTL and length (10) and the smallest rdata (A: 4; SRV: 6
// and a 2-byte pointer).
const minRecordBytes = 16

// resolver answers one question from the state. It holds no lock and is
// safe for concurrent use.
type resolver struct {
	domain      string // lower-case, fully qualified
	zoneLabels  int
	ttl         uint32
	state       StateReader
	readAllowed func(service string) bool // nil: everything is readable
}

func newResolver(cfg Config, deps Deps) *resolver {
	return &resolver{
		domain:      cfg.Domain,
		zoneLabels:  dns.CountLabel(cfg.Domain),
		ttl:         uint32(cfg.TTL.Seconds()),
		state:       deps.State,
		readAllowed: deps.ReadAllowed,
	}
}

// result is what a question resolves to.
type result struct {
	rcode  int
	answer []dns.RR
	extra  []dns.RR
	// soa puts the zone's SOA in the authority section (NXDOMAIN and empty
	// answers).
	soa bool
}

var (
	refused  = result{rcode: dns.RcodeRefused}
	nxdomain = result{rcode: dns.RcodeNameError, soa: true}
	nodata   = result{rcode: dns.RcodeSuccess, soa: true}
)

// reply builds the reply to req (one question, checked by miekg/dns's
// accept function) for a transport that carries at most size bytes. It does
// not truncate: the caller does, to size.
func (r *resolver) reply(req *dns.Msg, size int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	opt := req.IsEdns0()
	if opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m
		}
	}
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	q := req.Question[0]
	res := r.resolve(q, max(size/minRecordBytes, 1))
	m.Rcode = res.rcode
	if res.rcode == dns.RcodeRefused {
		return m
	}
	m.Authoritative = true
	m.Answer = res.answer
	if res.soa {
		m.Ns = []dns.RR{r.soa()}
	}
	// The OPT record SetEdns0 added stays last.
	m.Extra = append(res.extra, m.Extra...)
	return m
}

// resolve answers q with at most limit records in the answer section.
func (r *resolver) resolve(q dns.Question, limit int) result {
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return refused
	}
	if !dns.IsSubDomain(r.domain, q.Name) {
		return refused
	}
	labels, ok := wireLabels(q.Name)
	if !ok || len(labels) < r.zoneLabels {
		return refused
	}
	prefix := labels[:len(labels)-r.zoneLabels]
	if len(prefix) == 0 { // the apex
		if q.Qtype == dns.TypeSOA {
			return result{answer: []dns.RR{r.soa()}}
		}
		return nodata
	}
	rest, kind := prefix[:len(prefix)-1], prefix[len(prefix)-1]
	switch {
	case isLabel(kind, serviceLabel):
		if len(rest) == 0 {
			return nodata // an empty non-terminal: names exist below it
		}
		return r.serviceQuery(q, rest, limit)
	case isLabel(kind, instanceLabel):
		if len(rest) == 0 {
			return nodata
		}
		return r.instanceQuery(q, rest)
	}
	return nxdomain
}

// isLabel compares a label with an ASCII keyword without regard to case.
// The length check keeps Unicode case folding (ſ, K) out.
func isLabel(label, keyword string) bool {
	return len(label) == len(keyword) && strings.EqualFold(label, keyword)
}

// wireLabels returns the labels of a name as raw bytes: an escaped dot
// (\.) or byte (\DDD) stays inside its label.
func wireLabels(name string) ([]string, bool) {
	var buf [256]byte // a wire name is at most 255 bytes
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return nil, false
	}
	var labels []string
	for i := 0; i < n; {
		l := int(buf[i])
		if l == 0 || i+1+l > n {
			break
		}
		labels = append(labels, string(buf[i+1:i+1+l]))
		i += 1 + l
	}
	return labels, true
}

// target is what an answer needs of one instance. Its strings are the
// state's own (never mutated once stored), taken without copying.
type target struct {
	service, id, address string
}

func targetOf(in *fsm.Instance) target {
	return target{service: in.Service, id: in.ID, address: in.Address}
}

// lookup returns the HEALTHY instances of a service that match (all if
// match is nil); known is false when the service has no instance or the
// reader may not read it. match runs under the state's read lock.
func (r *resolver) lookup(service string, match func(*fsm.Instance) bool) (healthy []target, known bool) {
	if r.readAllowed != nil && !r.readAllowed(service) {
		return nil, false
	}
	known = r.state.ScanService(service, func(in *fsm.Instance) {
		if in.State == fsm.StateHealthy && (match == nil || match(in)) {
			healthy = append(healthy, targetOf(in))
		}
	})
	return healthy, known
}

// serviceQuery answers <service>.service.<domain>. or
// <value>.<key>.<service>.service.<domain>.
func (r *resolver) serviceQuery(q dns.Question, rest []string, limit int) result {
	if healthy, ok := r.lookup(strings.Join(rest, "."), nil); ok {
		return r.serviceAnswer(q, healthy, limit)
	}
	if len(rest) >= 3 {
		key, value := rest[1], rest[0]
		healthy, ok := r.lookup(strings.Join(rest[2:], "."), func(in *fsm.Instance) bool {
			v, ok := in.Metadata[key]
			return ok && v == value
		})
		if ok {
			return r.serviceAnswer(q, healthy, limit)
		}
	}
	if len(rest) >= 2 { // <key>.<service>: an empty non-terminal of the filter
		if _, ok := r.lookup(strings.Join(rest[1:], "."), nil); ok {
			return nodata
		}
	}
	return nxdomain
}

// serviceAnswer answers for the healthy instances, shuffled.
func (r *resolver) serviceAnswer(q dns.Question, healthy []target, limit int) result {
	rand.Shuffle(len(healthy), func(i, j int) { healthy[i], healthy[j] = healthy[j], healthy[i] })
	var res result
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		seen := make(map[netip.Addr]bool)
		for i := range healthy {
			if len(res.answer) >= limit {
				break
			}
			ip, _, ok := ipOf(healthy[i].address)
			if !ok || seen[ip] {
				continue
			}
			if rr := r.addrRecord(q.Name, q.Qtype, ip); rr != nil {
				seen[ip] = true
				res.answer = append(res.answer, rr)
			}
		}
	case dns.TypeSRV:
		for i := range healthy {
			if len(res.answer) >= limit {
				break
			}
			srv, extra := r.srvRecord(q.Name, healthy[i])
			if srv != nil {
				res.answer = append(res.answer, srv)
				res.extra = append(res.extra, extra...)
			}
		}
	}
	if len(res.answer) == 0 {
		return nodata
	}
	return res
}

// instanceQuery answers <id>.<service>.instance.<domain>., trying each
// split of the labels into an id and a service, shortest id first.
func (r *resolver) instanceQuery(q dns.Question, rest []string) result {
	for j := 1; j < len(rest); j++ {
		service := strings.Join(rest[j:], ".")
		if r.readAllowed != nil && !r.readAllowed(service) {
			continue
		}
		if in, ok := r.state.Instance(service, strings.Join(rest[:j], ".")); ok {
			return r.instanceAnswer(q, &in)
		}
	}
	if _, ok := r.lookup(strings.Join(rest, "."), nil); ok {
		return nodata // <service>.instance.<domain>.: an empty non-terminal
	}
	return nxdomain
}

// instanceAnswer answers for one instance: nothing unless it is HEALTHY.
func (r *resolver) instanceAnswer(q dns.Question, in *fsm.Instance) result {
	if in.State != fsm.StateHealthy {
		return nodata
	}
	var res result
	switch q.Qtype {
	case dns.TypeSRV:
		if srv, extra := r.srvRecord(q.Name, targetOf(in)); srv != nil {
			res.answer, res.extra = []dns.RR{srv}, extra
		}
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeCNAME:
		ip, host, ok := ipOf(in.Address)
		switch {
		case ok && q.Qtype != dns.TypeCNAME:
			if rr := r.addrRecord(q.Name, q.Qtype, ip); rr != nil {
				res.answer = []dns.RR{rr}
			}
		case !ok && host != "":
			res.answer = []dns.RR{r.cname(q.Name, host)}
		}
	}
	if len(res.answer) == 0 {
		return nodata
	}
	return res
}

// ipOf returns the IP of an instance's address (host:port), or its host
// name when the address names a host.
func ipOf(address string) (ip netip.Addr, host string, ok bool) {
	h, _, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, "", false
	}
	ip, err = netip.ParseAddr(h)
	if err != nil {
		if _, valid := dns.IsDomainName(h); !valid {
			return netip.Addr{}, "", false
		}
		return netip.Addr{}, h, false
	}
	return ip.Unmap(), "", true
}

// addrRecord returns an A or AAAA record for ip if the question type asks
// for its family (ANY asks for both), else nil.
func (r *resolver) addrRecord(name string, qtype uint16, ip netip.Addr) dns.RR {
	switch {
	case ip.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
		return &dns.A{Hdr: r.header(name, dns.TypeA), A: ip.AsSlice()}
	case ip.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		return &dns.AAAA{Hdr: r.header(name, dns.TypeAAAA), AAAA: ip.AsSlice()}
	}
	return nil
}

// srvRecord returns an instance's SRV record and its target's address (or
// CNAME) record, or nil when the target is not a valid DNS name.
func (r *resolver) srvRecord(name string, in target) (dns.RR, []dns.RR) {
	_, portStr, err := net.SplitHostPort(in.address)
	if err != nil {
		return nil, nil
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, nil
	}
	tname := in.id + "." + in.service + "." + instanceLabel + "." + r.domain
	if _, ok := dns.IsDomainName(tname); !ok || strings.HasPrefix(tname, ".") {
		return nil, nil
	}
	srv := &dns.SRV{Hdr: r.header(name, dns.TypeSRV), Priority: 1, Weight: 1, Port: uint16(port), Target: tname}
	ip, host, ok := ipOf(in.address)
	switch {
	case ok && ip.Is4():
		return srv, []dns.RR{r.addrRecord(tname, dns.TypeA, ip)}
	case ok:
		return srv, []dns.RR{r.addrRecord(tname, dns.TypeAAAA, ip)}
	case host != "":
		return srv, []dns.RR{r.cname(tname, host)}
	}
	return srv, nil
}

func (r *resolver) cname(name, host string) dns.RR {
	return &dns.CNAME{Hdr: r.header(name, dns.TypeCNAME), Target: dns.Fqdn(host)}
}

func (r *resolver) header(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: r.ttl}
}

// soa is the zone's SOA: its serial the low 32 bits of the applied index,
// its negative-caching TTL the records' TTL.
func (r *resolver) soa() dns.RR {
	return &dns.SOA{
		Hdr:     r.header(r.domain, dns.TypeSOA),
		Ns:      "ns." + r.domain,
		Mbox:    "hostmaster." + r.domain,
		Serial:  uint32(r.state.AppliedIndex()),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  r.ttl,
	}
}
