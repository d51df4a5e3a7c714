package acl

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// render writes p back as HCL rules.
func render(p *Policy) string {
	var b strings.Builder
	for _, r := range p.Services {
		fmt.Fprintf(&b, "service %q { policy = %q }\n", r.Name, r.Access)
	}
	for _, r := range p.ServicePrefixes {
		fmt.Fprintf(&b, "service_prefix %q { policy = %q }\n", r.Name, r.Access)
	}
	if p.Operator != AccessNone {
		fmt.Fprintf(&b, "operator = %q\n", p.Operator)
	}
	if p.ACL != AccessNone {
		fmt.Fprintf(&b, "acl = %q\n", p.ACL)
	}
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		exampleHCL, exampleJSON, "", `service "a" { policy = "read" }`,
		"service \"a\" { policy = \"read\" }\nservice \"a\" { policy = \"write\" }",
		`service_prefix "" { policy = "deny" }`, `operator = "write"`, `acl = 1`,
		`service "a" { policy = var.x }`, `{"service": [{"a": {"policy": "read"}}]}`,
		`{"service": {"a": {"policy": "read"`, "service \"a\" {\n policy = <<EOT\nread\nEOT\n}",
		`operator = "${"read"}"`, `service "a b" { policy = "read" }`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rules []byte) {
		p, err := Parse(rules)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("Parse error %v does not wrap ErrInvalidPolicy", err)
			}
			return
		}
		if n := len(p.Services) + len(p.ServicePrefixes); n > MaxRules {
			t.Fatalf("Parse accepted %d rules", n)
		}
		for i, rs := range [][]ServiceRule{p.Services, p.ServicePrefixes} {
			seen := map[string]bool{}
			for _, r := range rs {
				if err := checkName(r.Name, i == 1); err != nil || seen[r.Name] || r.Access < AccessRead || r.Access > AccessDeny {
					t.Fatalf("Parse accepted rule %+v (name error %v, duplicate %v)", r, err, seen[r.Name])
				}
				seen[r.Name] = true
			}
		}
		// What Parse accepts renders to rules that parse to the same policy.
		text := render(p)
		again, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("Parse(render(p)) = %v; rules:\n%s", err, text)
		}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("Parse(render(p)) differs (-p +again):\n%s", diff)
		}
		z := NewAuthorizer(DefaultDeny, p)
		for _, r := range append(p.Services, p.ServicePrefixes...) {
			z.ServiceRead(r.Name)
			z.ServiceWrite(r.Name + "x")
		}
	})
}

// bearerMessages are the only messages ParseBearer may give, numbers
// replaced by N: no message carries any of the value.
var bearerMessages = map[string]bool{
	"acl: invalid authorization header: the value is N bytes, the limit is N":            true,
	"acl: invalid authorization header: the scheme is not Bearer":                        true,
	"acl: invalid authorization header: no space after Bearer":                           true,
	"acl: invalid authorization header: the token is empty":                              true,
	"acl: invalid authorization header: the token has a character not allowed at byte N": true,
}

var digits = regexp.MustCompile(`[0-9]+`)

func FuzzBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer 0b3d7b2e-8a7c-4a8e-9d0a-3c9f1f1e2a4b", "bearer abc==", "BEARER  a", "Bearer",
		"Bearer ", "Basic dXNlcjpzZWNyZXQ=", "Bearer\tabc", "Bearer a b", "Bearer =", "Bearer abé",
		"Bearer " + strings.Repeat("a", MaxAuthorizationLen),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := ParseBearer(v)
		if err != nil {
			if !errors.Is(err, ErrInvalidBearer) {
				t.Fatalf("ParseBearer(%q) error %v does not wrap ErrInvalidBearer", v, err)
			}
			if msg := digits.ReplaceAllString(err.Error(), "N"); !bearerMessages[msg] {
				t.Fatalf("ParseBearer(%q) gave an unexpected message %q", v, err)
			}
			return
		}
		if len(v) > MaxAuthorizationLen || s == "" || !strings.EqualFold(v[:7], "bearer ") || !strings.HasSuffix(v, string(s)) {
			t.Fatalf("ParseBearer(%q) accepted %q", v, string(s))
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; !b64tokenByte(c) && c != '=' {
				t.Fatalf("ParseBearer(%q) accepted byte %q", v, c)
			}
		}
		if again, err := ParseBearer("Bearer " + string(s)); err != nil || again != s {
			t.Fatalf("ParseBearer(Bearer %q) = %q, %v", string(s), string(again), err)
		}
	})
}
