// Package acl decides what a token may do. It is the one place that decides;
// every interface of the registry (gRPC, HTTP, DNS, the Consul API, UDP, the
// console) asks it and maps a deny to its own PermissionDenied.
//
// A policy's rules, in HCL or JSON:
//
//	service "orders" { policy = "write" }
//	service_prefix "pay" { policy = "read" }
//	service_prefix "" { policy = "deny" }
//	operator = "read"
//	acl = "write"
//
// # What it owns
//
//   - The rules language (Parse), read with github.com/hashicorp/hcl/v2
//     (gohcl), as Consul and Nomad read theirs with HCL. A policy is read, write or deny. operator covers cluster membership,
//     leadership transfer, snapshot save and restore, guard release (write)
//     and status details (read); acl covers policies and tokens. Parse
//     bounds its input (MaxRulesBytes, MaxRules, MaxNameLen) and rejects
//     unknown keys, other policy values and a second block for the same
//     name, naming the line and column.
//   - The Authorizer: the merged policies of one token plus a default
//     (deny or allow). The most specific service rule wins (exact, then the
//     longest prefix); at the same specificity deny beats write beats read;
//     write implies read; no rule means the default, except that acl needs
//     an explicit rule. Management() allows everything. A Decision names the
//     permission a deny needed ("service:orders:write", "operator:write").
//   - Token secrets: NewSecret and NewAccessorID (random UUIDs), HashSecret
//     (what is stored; the secret never is), Token.Matches (constant time),
//     and ParseBearer for "Authorization: Bearer <secret>" values. Secret and
//     Token print, in fmt and slog, without the secret.
//
// It imports no server package (raft, fsm, rpc, node, grpc): storing and
// replicating policies and tokens, and resolving a secret to an Authorizer,
// belong to the callers.
//
// # Concurrency
//
// Policies, Authorizers and Tokens are not changed after they are built, so
// any number of goroutines may read them. An Authorizer's decisions do not
// allocate.
package acl
