package acl

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
)

// The limits of a policy's rules. Parse names the one an input breaks.
const (
	// MaxRulesBytes bounds the rules text of one policy.
	MaxRulesBytes = 256 << 10
	// MaxRules bounds the service and service_prefix blocks of one policy.
	MaxRules = 4096
	// MaxNameLen bounds a service name or prefix in a rule, in bytes. It is
	// validate.MaxNameLen: a longer rule could never match a service.
	MaxNameLen = 128
)

// rulesFile is the name parse errors give the rules text.
const rulesFile = "rules"

// Access is the level a rule grants. The zero value is "no rule". The order
// is the merge order: at the same specificity the larger value wins, so deny
// beats write beats read.
type Access uint8

// The levels of a rule.
const (
	AccessNone Access = iota
	AccessRead
	AccessWrite
	AccessDeny
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessDeny:
		return "deny"
	default:
		return "none"
	}
}

// parseAccess reads a policy value of the rules language.
func parseAccess(s string) (Access, bool) {
	switch s {
	case "read":
		return AccessRead, true
	case "write":
		return AccessWrite, true
	case "deny":
		return AccessDeny, true
	}
	return AccessNone, false
}

// ServiceRule grants Access to the service Name (an exact rule) or to every
// service whose name starts with Name (a prefix rule).
type ServiceRule struct {
	Name   string
	Access Access
}

// Policy is the parsed form of one policy's rules.
type Policy struct {
	// Services are the exact rules and ServicePrefixes the prefix rules, in
	// the order of the text. No two have the same Name.
	Services        []ServiceRule
	ServicePrefixes []ServiceRule
	// Operator and ACL are AccessNone where the rules do not set them.
	Operator Access
	ACL      Access
}

// The shapes gohcl decodes the rules into. The ranges are for error messages.
type rulesDoc struct {
	Services      []serviceBlock `hcl:"service,block"`
	Prefixes      []serviceBlock `hcl:"service_prefix,block"`
	Operator      *string        `hcl:"operator,optional"`
	OperatorRange hcl.Range      `hcl:"operator,attr_value_range"`
	ACL           *string        `hcl:"acl,optional"`
	ACLRange      hcl.Range      `hcl:"acl,attr_value_range"`
}

type serviceBlock struct {
	Name        string    `hcl:"name,label"`
	NameRange   hcl.Range `hcl:"name,label_range"`
	Policy      string    `hcl:"policy"`
	PolicyRange hcl.Range `hcl:"policy,attr_value_range"`
}

// Parse reads a policy's rules, in HCL or in JSON (text whose first
// non-space character is '{'). Every error wraps ErrInvalidPolicy and names
// the line and column, the field, or the limit at fault. Unknown keys, policy
// values other than read, write and deny, two rules for the same service or
// prefix, and names that no service could have are errors. HCL's
// expressions and templates are not part of the language: a value is a
// quoted string.
func Parse(rules []byte) (*Policy, error) {
	if len(rules) > MaxRulesBytes {
		return nil, invalidf("rules are %d bytes, the limit is %d (MaxRulesBytes)", len(rules), MaxRulesBytes)
	}
	var (
		file  *hcl.File
		diags hcl.Diagnostics
	)
	if t := bytes.TrimLeft(rules, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		if err := checkJSONNesting(rules); err != nil {
			return nil, err
		}
		file, diags = hcljson.Parse(rules, rulesFile)
	} else {
		if err := checkHCLTokens(rules); err != nil {
			return nil, err
		}
		file, diags = hclsyntax.ParseConfig(rules, rulesFile, hcl.InitialPos)
	}
	if diags.HasErrors() {
		return nil, invalidf("%s", diags.Error())
	}
	var doc rulesDoc
	if diags := gohcl.DecodeBody(file.Body, nil, &doc); diags.HasErrors() {
		return nil, invalidf("%s", diags.Error())
	}
	if n := len(doc.Services) + len(doc.Prefixes); n > MaxRules {
		return nil, invalidf("rules have %d service and service_prefix blocks, the limit is %d (MaxRules)", n, MaxRules)
	}
	var p Policy
	var err error
	if p.Services, err = serviceRules("service", doc.Services, false); err != nil {
		return nil, err
	}
	if p.ServicePrefixes, err = serviceRules("service_prefix", doc.Prefixes, true); err != nil {
		return nil, err
	}
	if p.Operator, err = topLevel("operator", doc.Operator, doc.OperatorRange); err != nil {
		return nil, err
	}
	if p.ACL, err = topLevel("acl", doc.ACL, doc.ACLRange); err != nil {
		return nil, err
	}
	return &p, nil
}

// maxNesting bounds how deep braces and brackets nest in rules text. The
// rules need 2 levels in HCL and 4 in JSON. hcl's parsers are recursive
// descent: thousands of nested brackets or unary operators overflow the
// goroutine stack, which is a fatal error in Go, not a panic to recover.
// So the text is checked before hcl parses it.
const maxNesting = 8

// checkHCLTokens lexes HCL rules and accepts only the tokens the rules
// language needs: identifiers, =, quoted strings without templates, numbers
// (for a clear "not one of read, write, deny"), braces nested at most
// maxNesting deep, comments and newlines. Expressions (operators, brackets,
// parentheses, templates, heredocs) cannot appear, so neither can their
// recursion.
func checkHCLTokens(src []byte) error {
	toks, diags := hclsyntax.LexConfig(src, rulesFile, hcl.InitialPos)
	if diags.HasErrors() {
		return invalidf("%s", diags.Error())
	}
	depth := 0
	for _, t := range toks {
		switch t.Type {
		case hclsyntax.TokenOBrace:
			if depth++; depth > maxNesting {
				return invalidf("%s: blocks nest more than %d deep", t.Range, maxNesting)
			}
		case hclsyntax.TokenCBrace:
			depth = max(depth-1, 0)
		case hclsyntax.TokenIdent, hclsyntax.TokenEqual, hclsyntax.TokenOQuote, hclsyntax.TokenQuotedLit,
			hclsyntax.TokenCQuote, hclsyntax.TokenNumberLit, hclsyntax.TokenComment, hclsyntax.TokenNewline,
			hclsyntax.TokenEOF:
		default:
			return invalidf("%s: %q: the rules have no expressions or templates; a policy is a quoted string such as \"read\"",
				t.Range, truncate(string(t.Bytes)))
		}
	}
	return nil
}

// checkJSONNesting bounds how deep objects and arrays nest in JSON rules,
// skipping strings. Other errors are left to the JSON parser.
func checkJSONNesting(src []byte) error {
	depth, line, inString, escaped := 0, 1, false, false
	for _, c := range src {
		switch {
		case c == '\n':
			line++
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > maxNesting {
				return invalidf("%s:%d: objects and arrays nest more than %d deep", rulesFile, line, maxNesting)
			}
		case c == '}' || c == ']':
			depth = max(depth-1, 0)
		}
	}
	return nil
}

func serviceRules(kind string, blocks []serviceBlock, prefix bool) ([]ServiceRule, error) {
	var rules []ServiceRule
	first := make(map[string]hcl.Range, len(blocks))
	for _, b := range blocks {
		if err := checkName(b.Name, prefix); err != nil {
			return nil, invalidf("%s: %s %q: %v", b.NameRange, kind, truncate(b.Name), err)
		}
		if r, dup := first[b.Name]; dup {
			return nil, invalidf("%s: %s %q is already defined at %s; one block per name", b.NameRange, kind, b.Name, r)
		}
		first[b.Name] = b.NameRange
		a, ok := parseAccess(b.Policy)
		if !ok {
			return nil, invalidf("%s: %s %q: policy %q is not one of read, write, deny", b.PolicyRange, kind, b.Name, truncate(b.Policy))
		}
		rules = append(rules, ServiceRule{Name: b.Name, Access: a})
	}
	return rules, nil
}

func topLevel(key string, v *string, r hcl.Range) (Access, error) {
	if v == nil {
		return AccessNone, nil
	}
	a, ok := parseAccess(*v)
	if !ok {
		return AccessNone, invalidf("%s: %s = %q is not one of read, write, deny", r, key, truncate(*v))
	}
	return a, nil
}

// checkName accepts what a service name may be (1-MaxNameLen characters of
// [A-Za-z0-9._:-], as package validate has it); a prefix may also be empty.
func checkName(s string, prefix bool) error {
	if s == "" && !prefix {
		return fmt.Errorf("the name must not be empty (service_prefix \"\" matches every service)")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("the name is %d bytes, the limit is %d (MaxNameLen)", len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Errorf("the name has %q at byte %d; only [A-Za-z0-9._:-] is allowed", s[i], i)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// truncate keeps error messages bounded when they quote the input.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...)
}
