package fsm

// BeatSecret returns the cluster beat secret, or nil before a BeatSecretSet
// was applied. Package udpbeat derives each registration's UDP beat key from
// it. It is a secret: no read API returns it and nothing logs it. Like the
// ACL token hashes, it lives in the Raft log, in the snapshots on every
// node's disk and in backups (WriteSnapshot), so those are to be protected
// as the nodes' TLS keys are. The
// caller must not modify the slice.
func (f *FSM) BeatSecret() []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.BeatSecret()
}
