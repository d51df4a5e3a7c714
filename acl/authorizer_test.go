package acl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// check is one question to an Authorizer and the answer wanted.
type check struct {
	op    string // sr, sw (service read, write), or, ow, ar, aw
	name  string // the service, for sr and sw
	allow bool
}

func ask(z *Authorizer, c check) Decision {
	switch c.op {
	case "sr":
		return z.ServiceRead(c.name)
	case "sw":
		return z.ServiceWrite(c.name)
	case "or":
		return z.OperatorRead()
	case "ow":
		return z.OperatorWrite()
	case "ar":
		return z.ACLRead()
	case "aw":
		return z.ACLWrite()
	}
	panic("unknown op " + c.op)
}

func mustParse(t testing.TB, rules string) *Policy {
	t.Helper()
	p, err := Parse([]byte(rules))
	if err != nil {
		t.Fatalf("Parse(%q): %v", rules, err)
	}
	return p
}

func TestAuthorizer(t *testing.T) {
	allow, deny := true, false
	for _, tc := range []struct {
		name     string
		def      Default
		policies []string // rules text, one policy each
		checks   []check
	}{
		{"exact beats every prefix", DefaultDeny, []string{`
service "orders" { policy = "read" }
service_prefix "ord" { policy = "deny" }
service_prefix "" { policy = "write" }`}, []check{
			{"sr", "orders", allow}, {"sw", "orders", deny},
			{"sr", "ordersx", deny}, {"sr", "ord", deny},
			{"sw", "x", allow}, {"sw", "or", allow},
		}},
		{"exact deny beats a write prefix equal to the name", DefaultAllow, []string{`
service "orders" { policy = "deny" }
service_prefix "orders" { policy = "write" }`}, []check{
			{"sr", "orders", deny}, {"sw", "orders", deny},
			{"sw", "orders-v2", allow}, {"sw", "order", allow},
		}},
		{"longer prefix beats shorter", DefaultDeny, []string{`
service_prefix "pay" { policy = "read" }
service_prefix "payments" { policy = "deny" }
service_prefix "" { policy = "write" }`}, []check{
			{"sr", "payments-eu", deny}, {"sr", "payments", deny},
			{"sr", "pay-x", allow}, {"sw", "pay-x", deny}, {"sr", "paymen", allow},
			{"sw", "p", allow}, {"sw", "", allow},
		}},
		{"empty prefix matches every name", DefaultDeny, []string{`service_prefix "" { policy = "read" }`}, []check{
			{"sr", "anything", allow}, {"sw", "anything", deny}, {"sr", "a", allow},
			{"ow", "", deny}, {"aw", "", deny},
		}},
		{"prefix equal to the name", DefaultDeny, []string{`service_prefix "orders" { policy = "write" }`}, []check{
			{"sw", "orders", allow}, {"sr", "orders", allow}, {"sw", "orders.eu", allow},
			{"sr", "order", deny}, {"sr", "Orders", deny},
		}},
		{"prefix longer than the name", DefaultDeny, []string{`service_prefix "orders-long" { policy = "write" }`}, []check{
			{"sr", "orders", deny}, {"sr", "orders-lon", deny}, {"sw", "orders-long-1", allow},
		}},
		{"overlapping prefixes across two policies: the longer wins", DefaultDeny, []string{
			`service_prefix "pay" { policy = "write" }`,
			`service_prefix "payments" { policy = "read" }`,
		}, []check{
			{"sr", "payments", allow}, {"sw", "payments", deny}, {"sw", "payments-eu", deny},
			{"sw", "pay-x", allow}, {"sw", "paymen", allow},
		}},
		{"same exact rule in two policies: write beats read", DefaultDeny, []string{
			`service "orders" { policy = "read" }`,
			`service "orders" { policy = "write" }`,
		}, []check{{"sw", "orders", allow}, {"sr", "orders", allow}}},
		{"same exact rule in two policies: deny beats write", DefaultAllow, []string{
			`service "orders" { policy = "write" }`,
			`service "orders" { policy = "deny" }`,
		}, []check{{"sw", "orders", deny}, {"sr", "orders", deny}, {"sw", "other", allow}}},
		{"same exact rule, deny first: deny still beats write", DefaultAllow, []string{
			`service "orders" { policy = "deny" }`,
			`service "orders" { policy = "write" }`,
		}, []check{{"sw", "orders", deny}, {"sr", "orders", deny}}},
		{"same exact rule, write first: write still beats read", DefaultDeny, []string{
			`service "orders" { policy = "write" }`,
			`service "orders" { policy = "read" }`,
		}, []check{{"sw", "orders", allow}}},
		{"same prefix, deny first: deny still beats write", DefaultAllow, []string{
			`service_prefix "p" { policy = "deny" }`,
			`service_prefix "p" { policy = "write" }`,
		}, []check{{"sw", "p1", deny}, {"sr", "p1", deny}}},
		{"same prefix in two policies: deny beats read", DefaultAllow, []string{
			`service_prefix "p" { policy = "read" }`,
			`service_prefix "p" { policy = "deny" }`,
		}, []check{{"sr", "p1", deny}, {"sr", "q", allow}}},
		{"a deny prefix in one policy does not beat an exact write in another", DefaultDeny, []string{
			`service "pay" { policy = "write" }`,
			`service_prefix "" { policy = "deny" }`,
		}, []check{{"sw", "pay", allow}, {"sr", "payx", deny}}},
		{"default allow, no rules", DefaultAllow, nil, []check{
			{"sr", "x", allow}, {"sw", "x", allow}, {"or", "", allow}, {"ow", "", allow},
			{"ar", "", deny}, {"aw", "", deny},
		}},
		{"default deny, no rules", DefaultDeny, nil, []check{
			{"sr", "x", deny}, {"sw", "x", deny}, {"or", "", deny}, {"ow", "", deny},
			{"ar", "", deny}, {"aw", "", deny},
		}},
		{"default allow: a read rule still denies write", DefaultAllow, []string{`service "orders" { policy = "read" }`}, []check{
			{"sr", "orders", allow}, {"sw", "orders", deny}, {"sw", "other", allow},
		}},
		{"operator read", DefaultDeny, []string{`operator = "read"`}, []check{
			{"or", "", allow}, {"ow", "", deny}, {"sr", "x", deny},
		}},
		{"operator write implies read", DefaultDeny, []string{`operator = "write"`}, []check{
			{"or", "", allow}, {"ow", "", allow}, {"aw", "", deny},
		}},
		{"operator deny under default allow", DefaultAllow, []string{`operator = "deny"`}, []check{
			{"or", "", deny}, {"ow", "", deny}, {"sw", "x", allow},
		}},
		{"operator across policies: deny beats write", DefaultDeny, []string{`operator = "write"`, `operator = "deny"`}, []check{
			{"or", "", deny}, {"ow", "", deny},
		}},
		{"operator across policies, deny first", DefaultAllow, []string{`operator = "deny"`, `operator = "write"`, `operator = "read"`}, []check{
			{"or", "", deny}, {"ow", "", deny},
		}},
		{"operator across policies: write beats read", DefaultDeny, []string{`operator = "write"`, `operator = "read"`}, []check{
			{"ow", "", allow},
		}},
		{"acl write", DefaultDeny, []string{`acl = "write"`}, []check{
			{"ar", "", allow}, {"aw", "", allow}, {"ow", "", deny}, {"sr", "x", deny},
		}},
		{"acl read", DefaultAllow, []string{`acl = "read"`}, []check{{"ar", "", allow}, {"aw", "", deny}}},
		{"acl across policies: deny beats write", DefaultDeny, []string{`acl = "write"`, `acl = "deny"`}, []check{
			{"ar", "", deny}, {"aw", "", deny},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps []*Policy
			for _, r := range tc.policies {
				ps = append(ps, mustParse(t, r))
			}
			z := NewAuthorizer(tc.def, ps...)
			for _, c := range tc.checks {
				if got := ask(z, c).Allowed(); got != c.allow {
					t.Errorf("%s(%q) allowed = %v, want %v", c.op, c.name, got, c.allow)
				}
			}
		})
	}
}

func TestManagement(t *testing.T) {
	z := Management()
	for _, c := range []check{
		{"sr", "orders", true}, {"sw", "orders", true}, {"sw", "", true},
		{"or", "", true}, {"ow", "", true}, {"ar", "", true}, {"aw", "", true},
	} {
		if d := ask(z, c); !d.Allowed() || d.Err() != nil {
			t.Errorf("Management %s(%q) = %v, %v; want allowed", c.op, c.name, d.Allowed(), d.Err())
		}
	}
}

func TestNilPoliciesSkipped(t *testing.T) {
	z := NewAuthorizer(DefaultDeny, nil, mustParse(t, `service "a" { policy = "read" }`), nil)
	if !z.ServiceRead("a").Allowed() || z.ServiceRead("b").Allowed() {
		t.Fatal("nil policies changed the decisions")
	}
}

func TestDecisionErr(t *testing.T) {
	z := NewAuthorizer(DefaultDeny, mustParse(t, `service "orders" { policy = "read" }`))
	for _, tc := range []struct {
		d    Decision
		want string
	}{
		{z.ServiceWrite("orders"), "permission denied: needs service:orders:write"},
		{z.ServiceRead("pay"), "permission denied: needs service:pay:read"},
		{z.OperatorWrite(), "permission denied: needs operator:write"},
		{z.OperatorRead(), "permission denied: needs operator:read"},
		{z.ACLWrite(), "permission denied: needs acl:write"},
		{z.ACLRead(), "permission denied: needs acl:read"},
	} {
		err := tc.d.Err()
		if err == nil || err.Error() != tc.want {
			t.Errorf("Err() = %v, want %q", err, tc.want)
			continue
		}
		var pd *PermissionDeniedError
		if !errors.Is(err, ErrPermissionDenied) || !errors.As(err, &pd) || pd.Needed != tc.d.Needed() {
			t.Errorf("Err() = %#v: not a *PermissionDeniedError wrapping ErrPermissionDenied with %v", err, tc.d.Needed())
		}
	}
	if d := z.ServiceRead("orders"); !d.Allowed() || d.Err() != nil {
		t.Errorf("ServiceRead(orders) = %v, %v; want allowed, nil", d.Allowed(), d.Err())
	}
}

func TestParseDefault(t *testing.T) {
	for in, want := range map[string]Default{"allow": DefaultAllow, "deny": DefaultDeny} {
		if got, err := ParseDefault(in); err != nil || got != want || got.String() != in {
			t.Errorf("ParseDefault(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "Allow", "permit"} {
		if _, err := ParseDefault(in); err == nil || !strings.Contains(err.Error(), "not one of allow, deny") {
			t.Errorf("ParseDefault(%q) error = %v", in, err)
		}
	}
}

// reference decides a service question by scanning every rule: the
// specification that the Authorizer's maps implement.
func reference(def Default, ps []*Policy, name string, want Access) bool {
	best, bestLen, exact := AccessNone, -1, false
	for _, p := range ps {
		for _, r := range p.Services {
			if r.Name != name {
				continue
			}
			if !exact {
				best, exact = AccessNone, true
			}
			best = max(best, r.Access)
		}
	}
	if !exact {
		for _, p := range ps {
			for _, r := range p.ServicePrefixes {
				if !strings.HasPrefix(name, r.Name) || len(r.Name) < bestLen {
					continue
				}
				if len(r.Name) > bestLen {
					best, bestLen = AccessNone, len(r.Name)
				}
				best = max(best, r.Access)
			}
		}
	}
	switch best {
	case AccessNone:
		return def == DefaultAllow
	case AccessDeny:
		return false
	}
	return best >= want
}

// TestAuthorizerMatchesReference compares random policies over a small
// alphabet, so that prefixes overlap often, with the reference.
func TestAuthorizerMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(maxLen int) string {
		b := make([]byte, rng.IntN(maxLen+1))
		for i := range b {
			b[i] = "ab"[rng.IntN(2)]
		}
		return string(b)
	}
	for round := range 300 {
		var ps []*Policy
		for range 1 + rng.IntN(3) {
			p := &Policy{}
			seen := map[string]bool{}
			for range rng.IntN(6) {
				n := word(4)
				if n == "" || seen["s"+n] {
					continue
				}
				seen["s"+n] = true
				p.Services = append(p.Services, ServiceRule{n, Access(1 + rng.IntN(3))})
			}
			for range rng.IntN(6) {
				n := word(4)
				if seen["p"+n] {
					continue
				}
				seen["p"+n] = true
				p.ServicePrefixes = append(p.ServicePrefixes, ServiceRule{n, Access(1 + rng.IntN(3))})
			}
			ps = append(ps, p)
		}
		def := Default(rng.IntN(2))
		z := NewAuthorizer(def, ps...)
		for range 30 {
			name := word(5)
			for _, want := range []Access{AccessRead, AccessWrite} {
				got := z.serviceDecision(name, want).Allowed()
				if ref := reference(def, ps, name, want); got != ref {
					t.Fatalf("round %d: %s %q = %v, reference %v; default %v, policies %s",
						round, want, name, got, ref, def, dump(ps))
				}
			}
		}
	}
}

func dump(ps []*Policy) string {
	var b strings.Builder
	for i, p := range ps {
		fmt.Fprintf(&b, "\n  %d: services %v prefixes %v", i, p.Services, p.ServicePrefixes)
	}
	return b.String()
}

// thousandRules is a policy of 500 exact and 500 prefix rules with names of
// many lengths, and names that hit an exact rule, a prefix and nothing.
func thousandRules(tb testing.TB) (p *Policy, exactHit, prefixHit, miss string) {
	var b strings.Builder
	for i := range 500 {
		fmt.Fprintf(&b, "service \"svc-%d-%s\" { policy = \"write\" }\n", i, strings.Repeat("x", i%40))
		fmt.Fprintf(&b, "service_prefix \"team%d-%s\" { policy = \"read\" }\n", i, strings.Repeat("y", i%40))
	}
	p = mustParse(tb, b.String())
	if len(p.Services)+len(p.ServicePrefixes) != 1000 {
		tb.Fatalf("%d rules, want 1000", len(p.Services)+len(p.ServicePrefixes))
	}
	return p, "svc-250-" + strings.Repeat("x", 250%40), "team77-" + strings.Repeat("y", 77%40) + "-orders", "zzz-unmatched-service-name"
}

func TestServiceReadDoesNotAllocate(t *testing.T) {
	p, exactHit, prefixHit, miss := thousandRules(t)
	z := NewAuthorizer(DefaultDeny, p)
	for _, tc := range []struct {
		name  string
		allow bool
	}{{exactHit, true}, {prefixHit, true}, {miss, false}} {
		if got := z.ServiceRead(tc.name).Allowed(); got != tc.allow {
			t.Fatalf("ServiceRead(%q) = %v, want %v", tc.name, got, tc.allow)
		}
		if n := testing.AllocsPerRun(100, func() { z.ServiceRead(tc.name) }); n != 0 {
			t.Errorf("ServiceRead(%q) allocates %v times", tc.name, n)
		}
	}
}

func BenchmarkServiceRead(b *testing.B) {
	p, exactHit, prefixHit, miss := thousandRules(b)
	z := NewAuthorizer(DefaultDeny, p)
	for _, bc := range []struct{ name, service string }{
		{"exact", exactHit}, {"prefix", prefixHit}, {"miss", miss},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				z.ServiceRead(bc.service)
			}
		})
	}
}
