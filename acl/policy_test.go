package acl

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const exampleHCL = `
# The example of the issue.
service "orders" { policy = "write" }
service_prefix "pay" { policy = "read" }
service_prefix "" { policy = "deny" }
operator = "read"
acl = "write"
`

const exampleJSON = `{
  "service": {"orders": {"policy": "write"}},
  "service_prefix": {"pay": {"policy": "read"}, "": {"policy": "deny"}},
  "operator": "read",
  "acl": "write"
}`

var examplePolicy = &Policy{
	Services:        []ServiceRule{{Name: "orders", Access: AccessWrite}},
	ServicePrefixes: []ServiceRule{{Name: "pay", Access: AccessRead}, {Name: "", Access: AccessDeny}},
	Operator:        AccessRead,
	ACL:             AccessWrite,
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *Policy
	}{
		{"hcl", exampleHCL, examplePolicy},
		{"json", exampleJSON, examplePolicy},
		{"json with leading space", "\n  " + exampleJSON, examplePolicy},
		{"empty", "", &Policy{}},
		{"comments only", "# nothing\n// here\n", &Policy{}},
		{"same name exact and prefix", `
service "a" { policy = "read" }
service_prefix "a" { policy = "deny" }`, &Policy{
			Services:        []ServiceRule{{Name: "a", Access: AccessRead}},
			ServicePrefixes: []ServiceRule{{Name: "a", Access: AccessDeny}},
		}},
		{"json array of blocks", `{"service": [{"a": {"policy": "read"}}, {"b": {"policy": "deny"}}]}`, &Policy{
			Services: []ServiceRule{{Name: "a", Access: AccessRead}, {Name: "b", Access: AccessDeny}},
		}},
		{"name of every allowed character", `service "Az09._:-" { policy = "read" }`, &Policy{
			Services: []ServiceRule{{Name: "Az09._:-", Access: AccessRead}},
		}},
		{"longest name", fmt.Sprintf(`service %q { policy = "read" }`, strings.Repeat("n", MaxNameLen)), &Policy{
			Services: []ServiceRule{{Name: strings.Repeat("n", MaxNameLen), Access: AccessRead}},
		}},
		{"operator write only", `operator = "write"`, &Policy{Operator: AccessWrite}},
		{"acl deny", `acl = "deny"`, &Policy{ACL: AccessDeny}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	manyRules := ""
	for i := range MaxRules + 1 {
		manyRules += fmt.Sprintf("service \"s%d\" { policy = \"read\" }\n", i)
	}
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the message, in order
	}{
		{"unknown block", `node "x" { policy = "read" }`,
			[]string{"rules:1,1-5", `Blocks of type "node" are not expected here`}},
		{"unknown top-level key", "\noperater = \"read\"",
			[]string{"rules:2,1-9", `argument named "operater" is not expected`, `Did you mean "operator"?`}},
		{"unknown key in a block", "service \"a\" {\n  policy = \"read\"\n  prefix = true\n}",
			[]string{"rules:3,3-9", `argument named "prefix" is not expected`}},
		{"bad service policy", `service "a" { policy = "admin" }`,
			[]string{"rules:1,24-31", `service "a": policy "admin" is not one of read, write, deny`}},
		{"bad prefix policy", "\n\nservice_prefix \"p\" { policy = \"Read\" }",
			[]string{"rules:3,", `service_prefix "p": policy "Read" is not one of read, write, deny`}},
		{"bad operator", `operator = "all"`,
			[]string{"rules:1,12-17", `operator = "all" is not one of read, write, deny`}},
		{"bad acl", `acl = 1`, []string{"rules:1,7-8", `acl = "1" is not one of`}},
		{"duplicate service", "service \"a\" { policy = \"read\" }\nservice \"a\" { policy = \"write\" }",
			[]string{"rules:2,9-12", `service "a" is already defined at rules:1,9-12`}},
		{"duplicate prefix", "service_prefix \"\" { policy = \"read\" }\nservice_prefix \"\" { policy = \"read\" }",
			[]string{"rules:2,", `service_prefix "" is already defined at rules:1,`}},
		{"duplicate service in json", `{"service": {"a": {"policy": "read"}, "a": {"policy": "write"}}}`,
			[]string{"rules:1,39-42", `service "a" is already defined at rules:1,14-17`}},
		{"duplicate operator", "operator = \"read\"\noperator = \"write\"",
			[]string{"rules:2,1-9", `"operator" was already set at rules:1,1-9`}},
		{"missing policy", `service "a" {}`, []string{"rules:1,", `"policy" is required`}},
		{"missing name", `service { policy = "read" }`, []string{"rules:1,", "Missing name for service"}},
		{"two names", `service "a" "b" { policy = "read" }`, []string{"rules:1,", "Extraneous label for service"}},
		{"empty exact name", `service "" { policy = "read" }`, []string{"rules:1,9-11", `service "": the name must not be empty`}},
		{"name with a space", `service "a b" { policy = "read" }`, []string{"rules:1,9-14", `has ' ' at byte 1`}},
		{"name too long", fmt.Sprintf(`service_prefix %q { policy = "read" }`, strings.Repeat("n", MaxNameLen+1)),
			[]string{"rules:1,", "the name is 129 bytes, the limit is 128 (MaxNameLen)"}},
		{"variable", `service "a" { policy = var.x }`, []string{"rules:1,27-28", `".": the rules have no expressions or templates`}},
		{"function", `service "a" { policy = upper("read") }`, []string{"rules:1,29-30", `"(": the rules have no expressions`}},
		{"template", `operator = "${"read"}"`, []string{"rules:1,13-15", `"${": the rules have no expressions`}},
		{"heredoc", "operator = <<EOT\nread\nEOT\n", []string{"rules:1,12-2,1", `"<<EOT\n": the rules have no expressions`}},
		{"list", `operator = ["read"]`, []string{"rules:1,12-13", `"[": the rules have no expressions`}},
		{"blocks nested too deep", strings.Repeat("service \"a\" {\n", 9), []string{"rules:9,13-14", "blocks nest more than 8 deep"}},
		{"json nested too deep", `{"service": [[[[[[[[{}]]]]]]]]}`, []string{"rules:1", "objects and arrays nest more than 8 deep"}},
		{"json brackets in strings do not count", `{"service": {"[[[[[[[[[[": {"policy": "read"}}}`, []string{"rules:1,14-26", `has '[' at byte 0`}},
		{"syntax error", "service \"a\" {\n policy = \n}", []string{"rules:2,", "Invalid expression"}},
		{"json unknown key", `{"service": {"a": {"policy": "read", "x": 1}}}`, []string{"rules:1,38-41", `No argument or block type is named "x"`}},
		{"json truncated", `{"service": {"a": {"policy": "read"`, []string{"rules:1,", "Unclosed object"}},
		{"too many rules", manyRules, []string{"4097 service and service_prefix blocks, the limit is 4096 (MaxRules)"}},
		{"too large", strings.Repeat("#", MaxRulesBytes+1), []string{"262145 bytes, the limit is 262144 (MaxRulesBytes)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", p)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("Parse error %v does not wrap ErrInvalidPolicy", err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("Parse error %q does not contain %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestParseHostileNesting: text that nests as deep as MaxRulesBytes allows
// is an error, quickly. Before the token check, hcl's parser overflowed the
// goroutine stack on the first of these and the process died.
func TestParseHostileNesting(t *testing.T) {
	n := MaxRulesBytes - 32
	for _, in := range []string{
		"operator = " + strings.Repeat("[", n),
		"operator = " + strings.Repeat("(", n),
		"operator = " + strings.Repeat("-", n) + "1",
		"operator = " + strings.Repeat("!", n) + "true",
		"operator = \"" + strings.Repeat("${\"", n/3),
		"operator = " + strings.Repeat("1+", n/2) + "1",
		strings.Repeat("service \"a\" {\n", n/14),
		strings.Repeat("a {", n/3),
		`{"operator": ` + strings.Repeat("[", n),
		`{"service": ` + strings.Repeat(`{"a":`, n/5),
	} {
		start := time.Now()
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%.20q...) succeeded", in)
		}
		// Generous for -race on a loaded machine (0.1 s each without
		// -race, under 1 s with it); it catches a parse that goes quadratic.
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Parse(%.20q...) took %v", in, d)
		}
	}
}

// TestParseQuotesBounded: an error quoting a long value cuts it.
func TestParseQuotesBounded(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	_, err := Parse([]byte(fmt.Sprintf(`operator = %q`, long)))
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("Parse error is %d bytes: %v", len(fmt.Sprint(err)), err)
	}
}
