package acl

import (
	"fmt"
	"slices"
)

// Default is what an Authorizer decides where no rule matches.
type Default uint8

// The default policies.
const (
	DefaultDeny Default = iota
	DefaultAllow
)

func (d Default) String() string {
	if d == DefaultAllow {
		return "allow"
	}
	return "deny"
}

// ParseDefault reads "allow" or "deny", for configuration.
func ParseDefault(s string) (Default, error) {
	switch s {
	case "deny":
		return DefaultDeny, nil
	case "allow":
		return DefaultAllow, nil
	}
	return DefaultDeny, fmt.Errorf("acl: default policy %q is not one of allow, deny", truncate(s))
}

// Resource is what a permission is about.
type Resource uint8

// The resources.
const (
	ResourceService Resource = iota + 1
	ResourceOperator
	ResourceACL
)

func (r Resource) String() string {
	switch r {
	case ResourceService:
		return "service"
	case ResourceOperator:
		return "operator"
	case ResourceACL:
		return "acl"
	}
	return "unknown"
}

// Permission is one permission a request needs: Access (read or write) on a
// Resource, for a service the service Name.
type Permission struct {
	Resource Resource
	Name     string
	Access   Access
}

// String gives the permission as "service:orders:write", "operator:write" or
// "acl:write".
func (p Permission) String() string {
	if p.Resource == ResourceService {
		return p.Resource.String() + ":" + p.Name + ":" + p.Access.String()
	}
	return p.Resource.String() + ":" + p.Access.String()
}

// Decision is an Authorizer's answer. It is a small value: deciding does not
// allocate, and the message is built only if Err is called.
type Decision struct {
	allowed bool
	needed  Permission
}

// Allowed reports whether the request may go ahead.
func (d Decision) Allowed() bool { return d.allowed }

// Needed is the permission that was checked.
func (d Decision) Needed() Permission { return d.needed }

// Err is nil if the decision allows, else a *PermissionDeniedError that
// names the permission needed.
func (d Decision) Err() error {
	if d.allowed {
		return nil
	}
	return &PermissionDeniedError{Needed: d.needed}
}

// Authorizer decides what one token may do. It is built once from the
// token's policies and is immutable, so any number of goroutines may ask it
// at once.
//
// Service rules: an exact rule for the name wins over any prefix rule; else
// the longest prefix rule that the name starts with wins; else the default.
// Rules of the same specificity from several policies merge, deny beating
// write beating read. write implies read. Operator and acl rules merge the
// same way; where no policy sets operator the default applies, but acl
// needs an explicit rule (or a management token) even under DefaultAllow.
type Authorizer struct {
	management bool
	allow      bool // DefaultAllow
	exact      map[string]Access
	prefix     map[string]Access
	prefixLens []int // the distinct lengths of prefix's keys, longest first
	operator   Access
	acl        Access
}

var management = &Authorizer{management: true}

// Management returns the Authorizer of a management token: it allows
// everything.
func Management() *Authorizer { return management }

// NewAuthorizer merges the policies of one token, with def for requests no
// rule matches. Nil policies are skipped.
func NewAuthorizer(def Default, policies ...*Policy) *Authorizer {
	z := &Authorizer{
		allow:  def == DefaultAllow,
		exact:  make(map[string]Access),
		prefix: make(map[string]Access),
	}
	for _, p := range policies {
		if p == nil {
			continue
		}
		for _, r := range p.Services {
			z.exact[r.Name] = max(z.exact[r.Name], r.Access)
		}
		for _, r := range p.ServicePrefixes {
			z.prefix[r.Name] = max(z.prefix[r.Name], r.Access)
		}
		z.operator = max(z.operator, p.Operator)
		z.acl = max(z.acl, p.ACL)
	}
	for k := range z.prefix {
		if !slices.Contains(z.prefixLens, len(k)) {
			z.prefixLens = append(z.prefixLens, len(k))
		}
	}
	slices.Sort(z.prefixLens)
	slices.Reverse(z.prefixLens)
	return z
}

// service returns the Access of the most specific rule for name, or
// AccessNone. Map lookups with a substring of name do not allocate.
func (z *Authorizer) service(name string) Access {
	if a, ok := z.exact[name]; ok {
		return a
	}
	for _, n := range z.prefixLens {
		if n > len(name) {
			continue
		}
		if a, ok := z.prefix[name[:n]]; ok {
			return a
		}
	}
	return AccessNone
}

// decide applies rule a to a request that needs want (read or write).
func (z *Authorizer) decide(a, want Access) bool {
	switch a {
	case AccessNone:
		return z.allow
	case AccessDeny:
		return false
	default:
		return a >= want // write implies read
	}
}

func (z *Authorizer) serviceDecision(name string, want Access) Decision {
	p := Permission{Resource: ResourceService, Name: name, Access: want}
	if z.management {
		return Decision{allowed: true, needed: p}
	}
	return Decision{allowed: z.decide(z.service(name), want), needed: p}
}

func (z *Authorizer) operatorDecision(want Access) Decision {
	p := Permission{Resource: ResourceOperator, Access: want}
	return Decision{allowed: z.management || z.decide(z.operator, want), needed: p}
}

func (z *Authorizer) aclDecision(want Access) Decision {
	p := Permission{Resource: ResourceACL, Access: want}
	allowed := z.management || z.acl != AccessNone && z.decide(z.acl, want)
	return Decision{allowed: allowed, needed: p}
}

// ServiceRead decides reading the instances of service name.
func (z *Authorizer) ServiceRead(name string) Decision {
	return z.serviceDecision(name, AccessRead)
}

// ServiceWrite decides registering, beating and deregistering instances of
// service name.
func (z *Authorizer) ServiceWrite(name string) Decision {
	return z.serviceDecision(name, AccessWrite)
}

// OperatorRead decides reading cluster status details.
func (z *Authorizer) OperatorRead() Decision { return z.operatorDecision(AccessRead) }

// OperatorWrite decides membership changes, leadership transfer, snapshot
// save and restore, and guard release.
func (z *Authorizer) OperatorWrite() Decision { return z.operatorDecision(AccessWrite) }

// ACLRead decides reading policies and tokens.
func (z *Authorizer) ACLRead() Decision { return z.aclDecision(AccessRead) }

// ACLWrite decides creating, changing and deleting policies and tokens.
func (z *Authorizer) ACLWrite() Decision { return z.aclDecision(AccessWrite) }
