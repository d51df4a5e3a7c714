package fsm

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// ACLPolicy is a stored policy: its name and its rules text, which the
// proposer checked with acl.Parse. The state never parses rules.
type ACLPolicy struct {
	Name  string
	Rules string
}

// ACLToken is a stored token. It holds the SHA-256 of the secret, never the
// secret.
type ACLToken struct {
	AccessorID  string
	SecretHash  []byte
	Policies    []string
	Description string
	Management  bool
}

// ACLResult is the Apply response to every ACL command.
type ACLResult struct {
	Index uint64
}

// aclState is the ACL part of State: policies by name, tokens by accessor
// id and by secret hash, the bootstrap flag and index, the Raft index of the
// last change to any of it.
type aclState struct {
	bootstrapped bool
	index        uint64
	policies     map[string]ACLPolicy
	tokens       map[string]ACLToken // by accessor id
	byHash       map[string]string   // string(secret hash) → accessor id
}

func newACLState() aclState {
	return aclState{
		policies: make(map[string]ACLPolicy),
		tokens:   make(map[string]ACLToken),
		byHash:   make(map[string]string),
	}
}

// ACLBootstrap creates the first management token. It fails with
// ErrACLBootstrapped once the cluster has been bootstrapped.
func (s *State) ACLBootstrap(index uint64, c *fsmpb.ACLBootstrap) (ACLResult, error) {
	if s.acl.bootstrapped {
		return ACLResult{}, fmt.Errorf("%w (at index %d)", ErrACLBootstrapped, s.acl.index)
	}
	if err := s.putToken(ACLToken{
		AccessorID:  c.GetAccessorId(),
		SecretHash:  c.GetSecretHash(),
		Description: c.GetDescription(),
		Management:  true,
	}); err != nil {
		return ACLResult{}, err
	}
	s.acl.bootstrapped = true
	s.acl.index = index
	return ACLResult{Index: index}, nil
}

// ACLPolicySet creates or replaces a policy.
func (s *State) ACLPolicySet(index uint64, c *fsmpb.ACLPolicySet) ACLResult {
	s.acl.policies[c.GetName()] = ACLPolicy{Name: c.GetName(), Rules: c.GetRules()}
	s.acl.index = index
	return ACLResult{Index: index}
}

// ACLPolicyDelete removes a policy; ErrACLNotFound if there is none. Tokens
// that name it keep the name and lose its rules.
func (s *State) ACLPolicyDelete(index uint64, c *fsmpb.ACLPolicyDelete) (ACLResult, error) {
	if _, ok := s.acl.policies[c.GetName()]; !ok {
		return ACLResult{}, fmt.Errorf("%w: policy %q", ErrACLNotFound, c.GetName())
	}
	delete(s.acl.policies, c.GetName())
	s.acl.index = index
	return ACLResult{Index: index}, nil
}

// ACLTokenSet creates or replaces a token keyed by accessor id. It fails
// with ErrACLConflict when another token has the same secret hash.
func (s *State) ACLTokenSet(index uint64, c *fsmpb.ACLTokenSet) (ACLResult, error) {
	if err := s.putToken(tokenFromProto(c)); err != nil {
		return ACLResult{}, err
	}
	s.acl.index = index
	return ACLResult{Index: index}, nil
}

// ACLTokenDelete removes a token; ErrACLNotFound if there is none.
func (s *State) ACLTokenDelete(index uint64, c *fsmpb.ACLTokenDelete) (ACLResult, error) {
	t, ok := s.acl.tokens[c.GetAccessorId()]
	if !ok {
		return ACLResult{}, fmt.Errorf("%w: token %q", ErrACLNotFound, c.GetAccessorId())
	}
	delete(s.acl.tokens, t.AccessorID)
	delete(s.acl.byHash, string(t.SecretHash))
	s.acl.index = index
	return ACLResult{Index: index}, nil
}

func (s *State) putToken(t ACLToken) error {
	if other, ok := s.acl.byHash[string(t.SecretHash)]; ok && other != t.AccessorID {
		return fmt.Errorf("%w: token %q has the same secret", ErrACLConflict, other)
	}
	if old, ok := s.acl.tokens[t.AccessorID]; ok {
		delete(s.acl.byHash, string(old.SecretHash))
	}
	s.acl.tokens[t.AccessorID] = t
	s.acl.byHash[string(t.SecretHash)] = t.AccessorID
	return nil
}

// TokenBySecretHash returns the token whose secret hashes to hash.
func (s *State) TokenBySecretHash(hash []byte) (ACLToken, bool) {
	id, ok := s.acl.byHash[string(hash)]
	if !ok {
		return ACLToken{}, false
	}
	return s.acl.tokens[id], true
}

// Policy returns one policy.
func (s *State) Policy(name string) (ACLPolicy, bool) {
	p, ok := s.acl.policies[name]
	return p, ok
}

// Policies returns every policy sorted by name.
func (s *State) Policies() []ACLPolicy {
	out := slices.Collect(maps.Values(s.acl.policies))
	slices.SortFunc(out, func(a, b ACLPolicy) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Tokens returns every token sorted by accessor id.
func (s *State) Tokens() []ACLToken {
	out := slices.Collect(maps.Values(s.acl.tokens))
	slices.SortFunc(out, func(a, b ACLToken) int { return cmp.Compare(a.AccessorID, b.AccessorID) })
	return out
}

// ACLIndex returns the Raft index of the last change to the ACL records
// and whether the cluster is bootstrapped.
func (s *State) ACLIndex() (uint64, bool) { return s.acl.index, s.acl.bootstrapped }

func tokenToProto(t ACLToken) *fsmpb.ACLTokenSet {
	return &fsmpb.ACLTokenSet{
		AccessorId:  t.AccessorID,
		SecretHash:  t.SecretHash,
		Policies:    t.Policies,
		Description: t.Description,
		Management:  t.Management,
	}
}

func tokenFromProto(c *fsmpb.ACLTokenSet) ACLToken {
	return ACLToken{
		AccessorID:  c.GetAccessorId(),
		SecretHash:  bytes.Clone(c.GetSecretHash()),
		Policies:    slices.Clone(c.GetPolicies()),
		Description: c.GetDescription(),
		Management:  c.GetManagement(),
	}
}

// ACLResolve returns, under one read lock, the token whose secret hashes to
// hash, the rules of its policies that exist (in the token's order), and
// the ACL index they reflect.
func (f *FSM) ACLResolve(hash []byte) (tok ACLToken, rules []ACLPolicy, aclIndex uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	aclIndex = max(f.state.acl.index, f.restored)
	tok, ok = f.state.TokenBySecretHash(hash)
	if !ok {
		return ACLToken{}, nil, aclIndex, false
	}
	for _, name := range tok.Policies {
		if p, found := f.state.Policy(name); found {
			rules = append(rules, p)
		}
	}
	return tok, rules, aclIndex, true
}

// ACLIndex returns the Raft index of the last change to the ACL records;
// a cache of resolved tokens is valid while it does not move.
func (f *FSM) ACLIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return max(f.state.acl.index, f.restored)
}

// ACLPolicies returns every policy sorted by name and the applied index.
func (f *FSM) ACLPolicies() ([]ACLPolicy, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Policies(), f.applied
}

// ACLTokens returns every token sorted by accessor id and the applied index.
func (f *FSM) ACLTokens() ([]ACLToken, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Tokens(), f.applied
}

// ACLPolicy returns one policy.
func (f *FSM) ACLPolicy(name string) (ACLPolicy, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Policy(name)
}

// snapshot copies the state for a snapshot at index. Instances share their
// Metadata maps, tokens their slices, with the state, which never mutates
// them.
func (s *State) snapshot(index uint64) *snapshot {
	return &snapshot{
		index:           index,
		instances:       s.insts.freeze(),
		nodes:           s.Nodes(),
		policies:        s.Policies(),
		tokens:          s.Tokens(),
		aclBootstrapped: s.acl.bootstrapped,
		aclIndex:        s.acl.index,
		beatSecret:      s.beatSecret,
	}
}
