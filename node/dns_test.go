package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// withDNS turns DNS on at a free port of 127.0.0.1.
func withDNS(cfg *node.Config) { cfg.DNS.Addr = "127.0.0.1:0" }

// registerAt registers service/id at addr with the given timing.
func registerAt(t *testing.T, ctx context.Context, c registryv1.RegistryClient, service, id, addr string, interval, suspectAfter, ttl time.Duration, md map[string]string) {
	t.Helper()
	_, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: service, Id: id, Address: addr, Metadata: md, Incarnation: 1,
		BeatInterval: durationpb.New(interval), SuspectAfter: durationpb.New(suspectAfter), Ttl: durationpb.New(ttl),
	}})
	if err != nil {
		t.Fatalf("Register %s/%s: %v", service, id, err)
	}
}

// lasting registers an instance that stays HEALTHY for the whole test
// without beating.
func lasting(t *testing.T, ctx context.Context, c registryv1.RegistryClient, service, id, addr string) {
	t.Helper()
	registerAt(t, ctx, c, service, id, addr, 10*time.Second, 30*time.Second, time.Minute, nil)
}

// dialNode opens a plaintext gRPC connection to nd, closed at cleanup.
func dialNode(t *testing.T, nd *node.Node) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// digPath returns dig's path, or skips the test.
func digPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig is not installed (Debian: apt-get install dnsutils); skipping the tests with a DNS client no one here wrote")
	}
	return path
}

// dig runs dig against addr with args and returns its output.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	all := append([]string{"@" + host, "-p", port, "+time=5", "+tries=2"}, args...)
	out, err := exec.CommandContext(ctx, digPath(t), all...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	return string(out)
}

// section returns the lines of one section (ANSWER, AUTHORITY,
// ADDITIONAL) of dig's full output.
func section(out, name string) string {
	_, rest, ok := strings.Cut(out, ";; "+name+" SECTION:\n")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "\n\n")
	return body
}

// records returns dig's record lines (+noall +answer, +additional or
// +authority), each as its fields without the TTL.
func records(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(f[0], ";") {
			continue
		}
		lines = append(lines, strings.Join(append(f[:1:1], f[2:]...), " "))
	}
	slices.Sort(lines)
	return lines
}

// Acceptance 1: dig @127.0.0.1 -p <port> orders.service.registry SRV lists
// every HEALTHY orders instance and none that is SUSPECT or expired, from
// a follower's replica.
func TestDigListsEveryHealthyInstanceAndNoSuspectOrExpiredOne(t *testing.T) {
	digPath(t)
	c := nodetest.New(t, 3, withDNS)
	leader := c.Leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	reg := c.Registry(leader)
	var want []string
	for i := range 5 {
		id, port := fmt.Sprintf("o%d", i), 8000+i
		lasting(t, ctx, reg, "orders", id, fmt.Sprintf("127.0.0.%d:%d", i+1, port))
		want = append(want, fmt.Sprintf("orders.service.registry. IN SRV 1 1 %d %s.orders.instance.registry.", port, id))
	}
	lasting(t, ctx, reg, "payments", "p1", "127.0.0.9:9000")
	// No beats: SUSPECT after 200 ms (past the failover grace), removed
	// after 20 s.
	registerAt(t, ctx, reg, "orders", "sleepy", "127.0.0.20:8020", 100*time.Millisecond, 200*time.Millisecond, 20*time.Second, nil)
	// No beats: removed after 300 ms.
	registerAt(t, ctx, reg, "orders", "gone", "127.0.0.21:8021", 100*time.Millisecond, 200*time.Millisecond, 300*time.Millisecond, nil)
	slices.Sort(want)

	f := c.Nodes[follower].FSM()
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		if in, ok := f.Instance("orders", "sleepy"); !ok || in.State != fsm.StateSuspect {
			return fmt.Errorf("orders/sleepy on %s: %+v (present %v), want SUSPECT", c.Nodes[follower].ID(), in.State, ok)
		}
		if _, ok := f.Instance("orders", "gone"); ok {
			return errors.New("orders/gone is not expired yet")
		}
		return nil
	})

	// The command as the acceptance criterion gives it (dig adds
	// +time=5 +tries=2 only to bound the wait).
	out := dig(t, c.Nodes[follower].DNSAddr(), "orders.service.registry", "SRV")
	if !strings.Contains(out, "status: NOERROR") {
		t.Errorf("dig orders.service.registry SRV: want NOERROR:\n%s", out)
	}
	if got := records(section(out, "ANSWER")); !slices.Equal(got, want) {
		t.Errorf("dig orders.service.registry SRV:\n%s\nwant exactly:\n%s", out, strings.Join(want, "\n"))
	}
}

func TestDigAnswersANXDOMAINAndTruncatesOverUDPAndAnswersAllOverTCP(t *testing.T) {
	digPath(t)
	nd := nodetest.Single(t, withDNS)
	conn := registryv1.NewRegistryClient(dialNode(t, nd))
	ctx := t.Context()
	for i := range 200 {
		lasting(t, ctx, conn, "big", fmt.Sprintf("b%03d", i), fmt.Sprintf("127.0.%d.%d:%d", i/100+1, i%100+1, 10000+i))
	}
	lasting(t, ctx, conn, "orders", "o1", "127.0.0.7:8080")
	addr := nd.DNSAddr()

	if got := records(dig(t, addr, "orders.service.registry", "A", "+noall", "+answer")); !slices.Equal(got, []string{"orders.service.registry. IN A 127.0.0.7"}) {
		t.Errorf("A: %q, want the one address", got)
	}
	out := dig(t, addr, "nope.service.registry", "SRV")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "AUTHORITY: 1") || !strings.Contains(out, "\tIN\tSOA\tns.registry. hostmaster.registry. ") {
		t.Errorf("unknown service: want NXDOMAIN with the SOA:\n%s", out)
	}
	out = dig(t, addr, "example.com", "A")
	if !strings.Contains(out, "status: REFUSED") {
		t.Errorf("a name outside the zone: want REFUSED:\n%s", out)
	}

	// Over UDP without EDNS0 (512 bytes), ignoring TC: truncated.
	out = dig(t, addr, "big.service.registry", "SRV", "+notcp", "+ignore", "+noedns")
	if !strings.Contains(out, " tc") || strings.Count(out, "\tSRV\t") >= 200 {
		t.Errorf("UDP without EDNS0: want TC set and fewer than 200 SRV records:\n%s", out)
	}
	// Over UDP with dig's EDNS0 buffer (1232 bytes): still truncated.
	out = dig(t, addr, "big.service.registry", "SRV", "+notcp", "+ignore")
	if !strings.Contains(out, " tc") {
		t.Errorf("UDP with EDNS0: want TC set:\n%s", out)
	}
	// Over TCP: everything, the SRV records and their addresses.
	for _, args := range [][]string{{"+tcp"}, {}} { // {}: dig retries over TCP on TC
		out = dig(t, addr, append([]string{"big.service.registry", "SRV", "+noall", "+answer", "+additional"}, args...)...)
		if n, m := strings.Count(out, "\tSRV\t"), strings.Count(out, "\tA\t"); n != 200 || m != 200 {
			t.Errorf("dig %v: %d SRV and %d A records, want 200 each", args, n, m)
		}
	}
	out = dig(t, addr, "big.service.registry", "A", "+tcp", "+noall", "+answer")
	if n := strings.Count(out, "\tA\t"); n != 200 {
		t.Errorf("A over TCP: %d records, want 200", n)
	}
}

func TestGoResolverPointedAtTheNode(t *testing.T) {
	nd := nodetest.Single(t, func(cfg *node.Config) {
		withDNS(cfg)
		cfg.HTTPAddr = "127.0.0.1:0"
	})
	conn := registryv1.NewRegistryClient(dialNode(t, nd))
	ctx := t.Context()
	for i := range 100 {
		lasting(t, ctx, conn, "orders", fmt.Sprintf("o%03d", i), fmt.Sprintf("127.0.1.%d:%d", i+1, 9000+i))
	}
	var d net.Dialer
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, nd.DNSAddr())
	}}
	hosts, err := r.LookupHost(ctx, "orders.service.registry.")
	if err != nil || len(hosts) != 100 {
		t.Errorf("LookupHost: %d addresses, %v; want 100", len(hosts), err)
	}
	// 100 SRV records do not fit in a UDP reply: the Go resolver sees TC
	// and asks again over TCP.
	_, srvs, err := r.LookupSRV(ctx, "", "", "orders.service.registry.")
	if err != nil || len(srvs) != 100 {
		t.Fatalf("LookupSRV: %d records, %v; want 100", len(srvs), err)
	}
	if srvs[0].Target == "" || srvs[0].Port < 9000 || srvs[0].Port >= 9100 {
		t.Errorf("SRV %+v: want a target and a port of the instances", srvs[0])
	}
	ips, err := r.LookupHost(ctx, srvs[0].Target)
	if err != nil || len(ips) != 1 {
		t.Errorf("LookupHost(%s): %v, %v; want its address", srvs[0].Target, ips, err)
	}
	_, err = r.LookupHost(ctx, "nope.service.registry.")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("unknown service: %v, want not found", err)
	}

	resp, err := http.Get("http://" + nd.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`registry_dns_queries_total{qtype="SRV",rcode="NOERROR"}`, `registry_dns_queries_total{qtype="A",rcode="NXDOMAIN"}`, "registry_dns_query_duration_seconds_count"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// With ACLs on, a query reads what the anonymous identity may: nothing
// under the default policy deny, every service under allow.
func TestDNSReadsFollowTheAnonymousRules(t *testing.T) {
	for _, tt := range []struct {
		policy string
		rcode  int
	}{{"deny", dns.RcodeNameError}, {"allow", dns.RcodeSuccess}} {
		t.Run(tt.policy, func(t *testing.T) {
			nd := nodetest.Single(t, func(cfg *node.Config) {
				withDNS(cfg)
				cfg.ACLEnabled, cfg.ACLDefaultPolicy = true, tt.policy
			})
			cc := dialNode(t, nd)
			conn := registryv1.NewRegistryClient(cc)
			boot, err := registryv1.NewACLClient(cc).Bootstrap(t.Context(), &registryv1.ACLBootstrapRequest{})
			if err != nil {
				t.Fatalf("Bootstrap: %v", err)
			}
			lasting(t, bearer(t.Context(), boot.SecretId), conn, "orders", "o1", "127.0.0.1:8080")
			q := new(dns.Msg)
			q.SetQuestion("orders.service.registry.", dns.TypeA)
			resp, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, nd.DNSAddr())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("default policy %s: %s, want %s", tt.policy, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
		})
	}
}

func TestDNSIsOffByDefault(t *testing.T) {
	nd := nodetest.Single(t, nil)
	if addr := nd.DNSAddr(); addr != "" {
		t.Errorf("DNSAddr %q without a DNS address configured, want off", addr)
	}
}
