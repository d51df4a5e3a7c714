package integration_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/udpbeat"
)

// Issue 14, acceptance 4: a leader kill during all three kinds of client
// traffic (Consul API passes, UDP beats, gRPC beats, and DNS queries)
// expires nothing that kept beating.

// The instances of the interface test: per kind, ifaceKept that keep
// beating, each kind in a service of its own, and one control per kind in
// ifaceControl that stops beating just before the kill.
const (
	ifaceKept    = 6
	ifaceConsul  = "iface-consul"
	ifaceUDP     = "iface-udp"
	ifaceGRPC    = "iface-grpc"
	ifaceControl = "iface-control"
	// ifaceDomain is the nodes' default --dns-domain.
	ifaceDomain = "registry."
	// ifaceDNSPace paces the DNS prober's rounds.
	ifaceDNSPace = 100 * time.Millisecond
	// ifaceHTTPTimeout bounds one Consul API call.
	ifaceHTTPTimeout = 2 * time.Second
)

// Three nodes serve DNS, the Consul API and UDP beats. Instances are kept
// alive by hashicorp/consul/api passing their TTL checks, by UDP beat
// datagrams and by gRPC beats, while DNS SRV queries go to every node; one
// control per kind stops beating, and the leader is SIGKILLed. No instance
// that kept beating is ever EXPIRED (SUSPECT is allowed, as in the other
// failover tests) or missing once the new leader is past its failover fence
// and one TTL more; no UDP beat of one is answered UNKNOWN or FENCED, no
// Consul pass 404; every DNS query to a node other than the killed one is
// answered NOERROR, and at the end every node, the killed one restarted,
// answers every kept instance. The controls expire: the new leader's checker runs.
func TestLeaderKillDuringConsulUDPGRPCAndDNSTrafficExpiresNothingThatKeptBeating(t *testing.T) {
	c := harness.Start(t, harness.Options{Interfaces: true})
	leader := waitLeader(t, c)
	rec := harness.NewEventRecorder(t, append(c.Followers(), leader), t.Logf)
	nodes := c.Nodes()

	// (c) gRPC beats, through every node (harness.Beater).
	b := harness.NewBeater(t, nodes, harness.BeaterOptions{Logf: t.Logf})
	grpcKept := ifaceInstances(ifaceGRPC, ifaceKept, 0)
	grpcControl := ifaceInstance(ifaceControl, "ctl-grpc", 100)
	registerBeating(t, nodes, b, append(slices.Clone(grpcKept), grpcControl))

	// (b) UDP beats: registered over gRPC for their beat keys, then beaten
	// with datagrams sent to the nodes in turn.
	udp := newUDPBeater(t, nodes)
	udpKept := ifaceInstances(ifaceUDP, ifaceKept, 200)
	udpControl := ifaceInstance(ifaceControl, "ctl-udp", 300)
	for _, in := range append(slices.Clone(udpKept), udpControl) {
		udp.add(in, registerForBeatKey(t, nodes[len(udp.instances)%len(nodes)], in))
	}
	udp.start()

	// (a) The Consul API: registered and passed by hashicorp/consul/api,
	// each pass through the next node, failing over on an error.
	cs := newConsulKeeper(t, nodes)
	var consulKept []*registryv1.Instance
	for i := range ifaceKept {
		id := fmt.Sprintf("%s-%d", ifaceConsul, i)
		cs.register(t, ifaceConsul, id, 400+i)
		consulKept = append(consulKept, &registryv1.Instance{Service: ifaceConsul, Id: id})
	}
	cs.register(t, ifaceControl, "ctl-consul", 500)
	cs.start()

	// (d) DNS: SRV queries for the kept services to every node.
	kept := map[string][]*registryv1.Instance{ifaceGRPC: grpcKept, ifaceUDP: udpKept, ifaceConsul: consulKept}
	probe := startDNSProbe(t, nodes, kept)

	waitCheckerSteady(t, leader)
	since := time.Now()
	waitAllBeaten(t, b, udp, cs, since)
	probe.waitAnswered(t, since)
	passTime(t, liveInterval*2)

	// The controls stop beating; then the leader is SIGKILLed.
	controls := []harness.InstanceKey{harness.KeyOf(grpcControl), harness.KeyOf(udpControl), {Service: ifaceControl, ID: "ctl-consul"}}
	b.Halt(controls[0])
	udp.halt(controls[1])
	cs.halt(controls[2].ID)
	probe.killed(leader)
	killedAt := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	newLeader, checkerAt := newLeaderAfter(t, c, leader)
	t.Logf("SIGKILLed leader %s; %s leads, its checker running %v after the kill", leader, newLeader, checkerAt.Sub(killedAt).Round(time.Millisecond))

	// Every kind of traffic gets through the new leader, which keeps every
	// kept instance past its failover fence and one TTL more; the controls
	// expire meanwhile.
	waitAllBeaten(t, b, udp, cs, checkerAt)
	waitCheckerSteady(t, newLeader)
	passTime(t, liveTTL)
	poll.Eventually(t, failoverGrace+liveTTL+replicationTimeout, haveEvents(rec, typeExpired, controls))
	for _, ev := range rec.EventsOf(typeExpired, ifaceControl) {
		t.Logf("control %s EXPIRED at index %d, received %v after the kill", ev.Key(), ev.GetIndex(), ev.ReceivedAt.Sub(killedAt).Round(time.Millisecond))
	}
	probe.waitAnswered(t, time.Now())
	probe.stop()
	// The killed node comes back: every third UDP beat stops being lost,
	// and its replica must catch up for the DNS check below.
	if err := leader.Restart(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, c)

	var keptAll []*registryv1.Instance
	for _, service := range []string{ifaceGRPC, ifaceUDP, ifaceConsul} {
		keptAll = append(keptAll, kept[service]...)
	}
	checkNoFalseExpiry(t, c, b, rec, keptAll, []string{ifaceGRPC, ifaceUDP, ifaceConsul})
	udp.check(t)
	cs.check(t)
	probe.check(t)
	// Every node, the restarted one too, answers DNS with every kept
	// instance and no control.
	for _, n := range c.Running() {
		for service, instances := range kept {
			poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
				ids, err := srvIDs(ctx, n.DNSAddr(), service)
				if err != nil {
					return err
				}
				if want := idsOf(instances); !slices.Equal(ids, want) {
					return fmt.Errorf("%s answers %s with %v, want %v", n, service, ids, want)
				}
				return nil
			})
		}
	}
}

// ifaceInstance is a registration with the live timing and a loopback
// address (DNS answers carry it).
func ifaceInstance(service, id string, n int) *registryv1.Instance {
	in := liveInstance(service, id, n)
	in.Address = fmt.Sprintf("127.0.0.%d:%d", 1+n%250, 9000+n)
	return in
}

func ifaceInstances(service string, count, n int) []*registryv1.Instance {
	out := make([]*registryv1.Instance, count)
	for i := range out {
		out[i] = ifaceInstance(service, fmt.Sprintf("%s-%d", service, i), n+i)
	}
	return out
}

// idsOf returns the sorted ids of instances.
func idsOf(instances []*registryv1.Instance) []string {
	out := ids(instances)
	slices.Sort(out)
	return out
}

// waitAllBeaten waits until every kept and control instance of every kind
// has been beaten (acknowledged, APPLIED, passed) since since.
func waitAllBeaten(t *testing.T, b *harness.Beater, udp *udpBeater, cs *consulKeeper, since time.Time) {
	t.Helper()
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		return errors.Join(b.AckedSince(since)(ctx), udp.appliedSince(since), cs.passedSince(since))
	})
}

// registerForBeatKey registers in through node, retrying while the cluster
// answers Unavailable, and returns the beat key Register handed out.
func registerForBeatKey(t *testing.T, node *harness.Node, in *registryv1.Instance) []byte {
	t.Helper()
	var key []byte
	poll.Eventually(t, replicationTimeout, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := node.RegistryClient().Register(ctx, &registryv1.RegisterRequest{Instance: in})
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("Register %s through %s: %v", harness.KeyOf(in), node, err)
			}
			return err
		}
		if len(resp.GetBeatKey()) != udpbeat.KeySize {
			t.Fatalf("Register %s: beat key of %d bytes, want %d", harness.KeyOf(in), len(resp.GetBeatKey()), udpbeat.KeySize)
		}
		key = resp.GetBeatKey()
		return nil
	})
	return key
}

// udpBeater keeps instances alive with UDP beats (package udpbeat's
// encoder), every liveInterval, each beat to the next node in turn (one
// dead node costs every third beat of an instance), asking for reply
// frames and recording them.
type udpBeater struct {
	t     *testing.T
	conn  *net.UDPConn
	addrs []*net.UDPAddr
	seq   atomic.Uint64 // one counter: strictly increasing per key, and a reply names its instance
	wg    sync.WaitGroup
	ctx   context.Context
	stopf context.CancelFunc

	mu        sync.Mutex
	instances []*udpInstance
	bySeq     map[uint64]*udpInstance
}

type udpInstance struct {
	key         harness.InstanceKey
	incarnation uint64
	beatKey     []byte
	halted      bool
	sent        int
	replies     map[udpbeat.Status]int
	lastApplied time.Time
}

func newUDPBeater(t *testing.T, nodes []*harness.Node) *udpBeater {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpBeater{t: t, conn: conn, bySeq: map[uint64]*udpInstance{}}
	for _, n := range nodes {
		a, err := net.ResolveUDPAddr("udp", n.UDPBeatAddr())
		if err != nil {
			t.Fatal(err)
		}
		u.addrs = append(u.addrs, a)
	}
	u.ctx, u.stopf = context.WithCancel(context.Background())
	t.Cleanup(u.stop)
	return u
}

func (u *udpBeater) add(in *registryv1.Instance, beatKey []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.instances = append(u.instances, &udpInstance{key: harness.KeyOf(in), incarnation: in.GetIncarnation(), beatKey: beatKey, replies: map[udpbeat.Status]int{}})
}

func (u *udpBeater) start() {
	u.wg.Go(u.receive)
	u.wg.Go(u.send)
}

func (u *udpBeater) stop() {
	u.stopf()
	u.conn.Close()
	u.wg.Wait()
}

func (u *udpBeater) halt(key harness.InstanceKey) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, in := range u.instances {
		if in.key == key {
			in.halted = true
		}
	}
}

func (u *udpBeater) send() {
	tick := time.NewTicker(liveInterval)
	defer tick.Stop()
	for round := 0; ; round++ {
		u.mu.Lock()
		var frames [][]byte
		var to []*net.UDPAddr
		for i, in := range u.instances {
			if in.halted {
				continue
			}
			seq := u.seq.Add(1)
			u.bySeq[seq] = in
			in.sent++
			frames = append(frames, udpbeat.Append(nil, udpbeat.Beat{
				Flags: udpbeat.FlagReply, Service: in.key.Service, ID: in.key.ID, Incarnation: in.incarnation, Seq: seq,
			}, in.beatKey))
			to = append(to, u.addrs[(round+i)%len(u.addrs)])
		}
		u.mu.Unlock()
		for i, f := range frames {
			// A datagram to a dead node is lost, as on a network.
			_, _ = u.conn.WriteToUDP(f, to[i])
		}
		select {
		case <-u.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (u *udpBeater) receive() {
	buf := make([]byte, 512)
	for {
		n, _, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed by stop
		}
		at := time.Now()
		frame := buf[:n]
		if n != udpbeat.ReplySize {
			u.t.Errorf("UDP reply of %d bytes, want %d", n, udpbeat.ReplySize)
			continue
		}
		u.mu.Lock()
		in := u.bySeq[binary.BigEndian.Uint64(frame[3:])]
		if in == nil {
			u.mu.Unlock()
			u.t.Errorf("UDP reply for a sequence number never sent")
			continue
		}
		r, err := udpbeat.ParseReply(frame, in.beatKey)
		if err != nil {
			u.mu.Unlock()
			u.t.Errorf("UDP reply for %s: %v", in.key, err)
			continue
		}
		in.replies[r.Status]++
		if r.Status == udpbeat.StatusApplied {
			in.lastApplied = at
		}
		u.mu.Unlock()
	}
}

// appliedSince is nil once every instance has an APPLIED reply received
// after since.
func (u *udpBeater) appliedSince(since time.Time) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, in := range u.instances {
		if !in.halted && in.lastApplied.Before(since) {
			return fmt.Errorf("UDP: %s has no APPLIED reply since %s", in.key, since.Format("15:04:05.000"))
		}
	}
	return nil
}

// check fails the test for every UNKNOWN (the instance was removed) or
// FENCED reply to a kept instance's beat, and logs the replies.
func (u *udpBeater) check(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	total := map[udpbeat.Status]int{}
	sent := 0
	for _, in := range u.instances {
		sent += in.sent
		for s, n := range in.replies {
			total[s] += n
		}
		if in.halted {
			continue
		}
		if n := in.replies[udpbeat.StatusUnknown] + in.replies[udpbeat.StatusFenced]; n > 0 {
			t.Errorf("UDP: %s, kept beating, got %d UNKNOWN and %d FENCED replies", in.key, in.replies[udpbeat.StatusUnknown], in.replies[udpbeat.StatusFenced])
		}
	}
	t.Logf("UDP: %d datagrams sent; replies %v", sent, total)
}

// consulKeeper registers instances through hashicorp/consul/api and passes
// their TTL checks every TTL/3, each through the next node, failing over to
// the others on an error.
type consulKeeper struct {
	clients []*consul.Client
	nodes   []*harness.Node
	wg      sync.WaitGroup
	ctx     context.Context
	stopf   context.CancelFunc

	mu     sync.Mutex
	checks []*consulCheck
	logged int
	logf   func(format string, args ...any)
}

type consulCheck struct {
	key      harness.InstanceKey
	halted   bool
	passes   int
	failed   int // passes no node accepted
	unknown  int // answers 404: the instance is gone
	lastPass time.Time
}

func newConsulKeeper(t *testing.T, nodes []*harness.Node) *consulKeeper {
	t.Helper()
	k := &consulKeeper{nodes: nodes, logf: t.Logf}
	for _, n := range nodes {
		cl, err := consul.NewClient(&consul.Config{Address: n.ConsulAddr(), HttpClient: &http.Client{Timeout: ifaceHTTPTimeout}})
		if err != nil {
			t.Fatal(err)
		}
		k.clients = append(k.clients, cl)
	}
	k.ctx, k.stopf = context.WithCancel(context.Background())
	t.Cleanup(k.stop)
	return k
}

// register registers service/id with a TTL check of liveTTL (beat interval
// TTL/3) through the nodes in turn until one accepts it.
func (k *consulKeeper) register(t *testing.T, service, id string, n int) {
	t.Helper()
	reg := &consul.AgentServiceRegistration{
		Name: service, ID: id, Address: fmt.Sprintf("127.0.0.%d", 1+n%250), Port: 9000 + n,
		Check: &consul.AgentServiceCheck{TTL: liveTTL.String()},
	}
	i := len(k.checks)
	poll.Eventually(t, replicationTimeout, func(context.Context) error {
		err := k.clients[i%len(k.clients)].Agent().ServiceRegister(reg)
		if err != nil {
			i++
		}
		return err
	})
	k.checks = append(k.checks, &consulCheck{key: harness.InstanceKey{Service: service, ID: id}})
}

func (k *consulKeeper) start() {
	for i, c := range k.checks {
		k.wg.Go(func() { k.keep(i, c) })
	}
}

func (k *consulKeeper) stop() {
	k.stopf()
	k.wg.Wait()
}

func (k *consulKeeper) halt(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.checks {
		if c.key.ID == id {
			c.halted = true
		}
	}
}

// keep passes check c every TTL/3 until stopped or halted.
func (k *consulKeeper) keep(i int, c *consulCheck) {
	tick := time.NewTicker(liveTTL / 3)
	defer tick.Stop()
	for round := 0; ; round++ {
		k.mu.Lock()
		halted := c.halted
		k.mu.Unlock()
		if !halted {
			k.pass(c, i+round)
		}
		select {
		case <-k.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pass passes c through client first, then through the others.
func (k *consulKeeper) pass(c *consulCheck, first int) {
	var errs []string
	for j := range k.clients {
		n := (first + j) % len(k.clients)
		err := k.clients[n].Agent().PassTTL("service:"+c.key.ID, "")
		if k.ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		if err == nil {
			c.passes++
			c.lastPass = time.Now()
			k.mu.Unlock()
			return
		}
		if strings.Contains(err.Error(), "404") {
			c.unknown++
		}
		k.mu.Unlock()
		errs = append(errs, fmt.Sprintf("%s: %v", k.nodes[n], err))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	c.failed++
	if k.logged < 10 {
		k.logged++
		k.logf("Consul PassTTL %s accepted by no node: %s", c.key, strings.Join(errs, "; "))
	}
}

// passedSince is nil once every instance's check has been passed after
// since.
func (k *consulKeeper) passedSince(since time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.checks {
		if !c.halted && c.lastPass.Before(since) {
			return fmt.Errorf("Consul: %s not passed since %s", c.key, since.Format("15:04:05.000"))
		}
	}
	return nil
}

// check fails the test for every pass that a node answered 404 for (the
// instance was gone) for a kept instance, and logs the passes.
func (k *consulKeeper) check(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	passes, failed := 0, 0
	for _, c := range k.checks {
		passes += c.passes
		failed += c.failed
		if !c.halted && c.unknown > 0 {
			t.Errorf("Consul: %s, kept passing, was answered 404 (unknown check) %d times", c.key, c.unknown)
		}
	}
	t.Logf("Consul: %d passes accepted, %d accepted by no node", passes, failed)
}

// dnsProbe queries every node for the SRV records of the kept services
// every ifaceDNSPace and records the answers. Every query to a node that
// is not the killed one must be answered NOERROR.
type dnsProbe struct {
	nodes    []*harness.Node
	services []string
	wg       sync.WaitGroup
	stopf    context.CancelFunc

	mu        sync.Mutex
	dead      *harness.Node
	queries   map[*harness.Node]int
	deadFails int
	failures  []string
	minSeen   map[string]int // fewest instances in one answer, per service
	answered  map[*harness.Node]time.Time
}

func startDNSProbe(t *testing.T, nodes []*harness.Node, kept map[string][]*registryv1.Instance) *dnsProbe {
	p := &dnsProbe{nodes: nodes, queries: map[*harness.Node]int{}, minSeen: map[string]int{}, answered: map[*harness.Node]time.Time{}}
	for service, instances := range kept {
		p.services = append(p.services, service)
		p.minSeen[service] = len(instances)
	}
	slices.Sort(p.services)
	ctx, cancel := context.WithCancel(context.Background())
	p.stopf = cancel
	t.Cleanup(p.stop)
	p.wg.Go(func() { p.run(ctx) })
	return p
}

func (p *dnsProbe) stop() {
	p.stopf()
	p.wg.Wait()
}

// killed marks n as the node about to be killed: its failures are allowed
// from now on.
func (p *dnsProbe) killed(n *harness.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead = n
}

func (p *dnsProbe) run(ctx context.Context) {
	for ctx.Err() == nil {
		next := time.Now().Add(ifaceDNSPace)
		for _, n := range p.nodes {
			for _, service := range p.services {
				ids, err := srvIDs(ctx, n.DNSAddr(), service)
				if ctx.Err() != nil {
					return
				}
				p.record(n, service, ids, err)
			}
		}
		waitUntil(ctx, next)
	}
}

func (p *dnsProbe) record(n *harness.Node, service string, ids []string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries[n]++
	switch {
	case err != nil && n == p.dead:
		p.deadFails++
	case err != nil:
		p.failures = append(p.failures, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), n, err))
	default:
		p.minSeen[service] = min(p.minSeen[service], len(ids))
		p.answered[n] = time.Now()
	}
}

// waitAnswered waits until every node not killed has answered after since.
func (p *dnsProbe) waitAnswered(t *testing.T, since time.Time) {
	t.Helper()
	poll.Eventually(t, replicationTimeout, func(context.Context) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, n := range p.nodes {
			if n != p.dead && p.answered[n].Before(since) {
				return fmt.Errorf("DNS: %s has not answered since %s", n, since.Format("15:04:05.000"))
			}
		}
		return nil
	})
}

// check fails the test for every DNS query a live node did not answer.
func (p *dnsProbe) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.failures {
		if i == 10 {
			t.Errorf("... and %d more DNS failures", len(p.failures)-10)
			break
		}
		t.Errorf("DNS query to a live node failed: %s", f)
	}
	t.Logf("DNS: queries per node %v; %d failed on the killed node (allowed); fewest healthy instances in one answer %v (SUSPECT ones are left out)",
		p.queries, p.deadFails, p.minSeen)
}

// srvIDs asks addr over UDP (EDNS0, 4096 bytes), then over TCP if that
// fails, for the SRV records of service, and returns the instance ids of
// their targets, sorted. An answer other than NOERROR, or truncated, is an
// error.
func srvIDs(ctx context.Context, addr, service string) ([]string, error) {
	name := service + ".service." + ifaceDomain
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	m.SetEdns0(4096, false)
	var (
		r   *dns.Msg
		err error
	)
	for _, network := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: network, Timeout: 2 * time.Second}
		if r, _, err = cl.ExchangeContext(ctx, m, addr); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("SRV %s: %w", name, err)
	}
	if r.Rcode != dns.RcodeSuccess || r.Truncated {
		return nil, fmt.Errorf("SRV %s: rcode %s, truncated %v", name, dns.RcodeToString[r.Rcode], r.Truncated)
	}
	var ids []string
	suffix := "." + service + ".instance." + ifaceDomain
	for _, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || !strings.HasSuffix(srv.Target, suffix) {
			return nil, fmt.Errorf("SRV %s: unexpected record %v", name, rr)
		}
		ids = append(ids, strings.TrimSuffix(srv.Target, suffix))
	}
	slices.Sort(ids)
	return ids, nil
}
