package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// snapshotVersion is the format of the snapshot stream: a length-delimited
// fsmpb.SnapshotHeader, then header.instance_count length-delimited
// fsmpb.Instance records sorted by (service, id), then header.node_count
// fsmpb.NodeMeta records sorted by node id, then (since version 2)
// header.acl_policy_count fsmpb.ACLPolicySet records sorted by name and
// header.acl_token_count fsmpb.ACLTokenSet records sorted by accessor id,
// then the end of the stream. Version 3 adds header.beat_secret and the
// instances' last_udp_seq. Version 1 streams, written before ACLs, are
// read as having no ACL records and not bootstrapped; version 1 and 2
// streams as having no beat secret and no UDP beat applied.
const snapshotVersion = 3

// minSnapshotVersion is the oldest format readSnapshot accepts.
const minSnapshotVersion = 1

var marshalDelim = protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}

// snapshot is a point-in-time copy of the state. The instances are the
// state's chunks at the snapshot, which the state copies before writing
// again (copy on write); their strings and Metadata maps are shared with
// the state, which never mutates them.
type snapshot struct {
	index     uint64
	instances frozen      // in store order; write sorts pointers to them
	nodes     []NodeMeta  // sorted
	policies  []ACLPolicy // sorted
	tokens    []ACLToken  // sorted
	// aclBootstrapped and aclIndex are the ACL state's flag and index.
	aclBootstrapped bool
	aclIndex        uint64
	// beatSecret is the cluster beat secret, shared with the state (which
	// never mutates it), or nil.
	beatSecret []byte
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

// Persist writes the snapshot to sink, then closes it; on error it cancels
// the sink instead.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		// The write error is the one worth reporting.
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return nil
}

// SnapshotInfo describes a snapshot stream.
type SnapshotInfo struct {
	// Index is the applied index the stream reflects.
	Index uint64
	// Instances, Nodes, Policies and Tokens count its records.
	Instances, Nodes, Policies, Tokens int
}

func (s *snapshot) info() SnapshotInfo {
	return SnapshotInfo{Index: s.index, Instances: s.instances.n, Nodes: len(s.nodes),
		Policies: len(s.policies), Tokens: len(s.tokens)}
}

// WriteSnapshot writes the current state to w in the snapshot format, the
// stream Snapshot().Persist writes: a backup. The state is copied under the
// read lock; the encoding runs without it.
func (f *FSM) WriteSnapshot(w io.Writer) (SnapshotInfo, error) {
	s := f.snapshot()
	if err := s.write(w); err != nil {
		return SnapshotInfo{}, fmt.Errorf("fsm: write snapshot: %w", err)
	}
	return s.info(), nil
}

// PrepareRestore reads a backup (a stream WriteSnapshot or Persist wrote)
// from r, decodes and checks all of it as Restore does, and writes it to w
// re-encoded for raft's user restore: with index as its applied index (the
// Raft index it is about to be installed at) and with this FSM's node
// records in place of the backup's, since a backup restores the registry's
// contents, not the cluster's membership. Its ACL records replace this
// FSM's, unless it has none: then this FSM's are kept; the same for the
// beat secret. It changes nothing in the FSM.
// A backup that does not decode fails with an error wrapping
// ErrBadSnapshot (and r's own error, if r failed).
func (f *FSM) PrepareRestore(r io.Reader, index uint64, w io.Writer) (SnapshotInfo, error) {
	st, _, err := readSnapshot(r)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	// The backup's ACL policies and tokens are restored with its
	// instances: they are the registry's contents too. A backup without
	// ACL state (taken before ACLs, or never bootstrapped) keeps this
	// cluster's: restoring it must not reopen the bootstrap.
	s := st.snapshot(index)
	s.nodes = f.Nodes()
	if !s.aclBootstrapped && len(s.policies) == 0 && len(s.tokens) == 0 {
		cur := f.snapshot()
		s.policies, s.tokens, s.aclBootstrapped, s.aclIndex = cur.policies, cur.tokens, cur.aclBootstrapped, cur.aclIndex
	}
	// Likewise the beat secret: a backup without one keeps this cluster's,
	// so that the keys handed out here stay valid.
	if s.beatSecret == nil {
		s.beatSecret = f.snapshot().beatSecret
	}
	if err := s.write(w); err != nil {
		return SnapshotInfo{}, fmt.Errorf("fsm: prepare restore: %w", err)
	}
	return s.info(), nil
}

// Release does nothing: the snapshot holds no resources.
func (s *snapshot) Release() {}

// hash returns the hex SHA-256 of the snapshot stream.
func (s *snapshot) hash() string {
	h := sha256.New()
	if err := s.write(h); err != nil {
		// A hash never fails to write, and the records are built from valid
		// values; an error here is a programming error.
		panic(fmt.Sprintf("fsm: hash snapshot: %v", err))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// write encodes the snapshot stream to w.
func (s *snapshot) write(w io.Writer) error {
	instances := sortInstances(s.instances.all())
	bw := bufio.NewWriter(w)
	header := &fsmpb.SnapshotHeader{
		Version:         snapshotVersion,
		Index:           s.index,
		InstanceCount:   uint64(len(instances)),
		NodeCount:       uint64(len(s.nodes)),
		AclPolicyCount:  uint64(len(s.policies)),
		AclTokenCount:   uint64(len(s.tokens)),
		AclBootstrapped: s.aclBootstrapped,
		AclIndex:        s.aclIndex,
		BeatSecret:      s.beatSecret,
	}
	if _, err := marshalDelim.MarshalTo(bw, header); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	var enc instanceEncoder
	var rec []byte
	for _, in := range instances {
		var err error
		if rec, err = enc.appendInstanceRecord(rec[:0], in); err != nil {
			return fmt.Errorf("instance %s/%s: %w", in.Service, in.ID, err)
		}
		if _, err := bw.Write(rec); err != nil {
			return fmt.Errorf("instance %s/%s: %w", in.Service, in.ID, err)
		}
	}
	for _, n := range s.nodes {
		rec := &fsmpb.NodeMeta{NodeId: n.NodeID, GrpcAddress: n.GRPCAddress, HttpAddress: n.HTTPAddress}
		if _, err := marshalDelim.MarshalTo(bw, rec); err != nil {
			return fmt.Errorf("node %s: %w", n.NodeID, err)
		}
	}
	for _, p := range s.policies {
		if _, err := marshalDelim.MarshalTo(bw, &fsmpb.ACLPolicySet{Name: p.Name, Rules: p.Rules}); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
	}
	for _, t := range s.tokens {
		if _, err := marshalDelim.MarshalTo(bw, tokenToProto(t)); err != nil {
			return fmt.Errorf("token %s: %w", t.AccessorID, err)
		}
	}
	return bw.Flush()
}

// readSnapshot decodes a whole snapshot stream into a new State and returns
// it with the snapshot's applied index.
func readSnapshot(r io.Reader) (*State, uint64, error) {
	br := bufio.NewReader(r)
	var header fsmpb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &header); err != nil {
		return nil, 0, fmt.Errorf("header: %w", noEOF(err))
	}
	if v := header.GetVersion(); v < minSnapshotVersion || v > snapshotVersion {
		return nil, 0, fmt.Errorf("unsupported snapshot version %d, want %d to %d", v, minSnapshotVersion, snapshotVersion)
	}
	if header.GetVersion() < 2 && (header.GetAclPolicyCount() != 0 || header.GetAclTokenCount() != 0 || header.GetAclBootstrapped()) {
		return nil, 0, fmt.Errorf("snapshot version %d has ACL records", header.GetVersion())
	}
	if header.GetVersion() < 3 && len(header.GetBeatSecret()) != 0 {
		return nil, 0, fmt.Errorf("snapshot version %d has a beat secret", header.GetVersion())
	}

	st := NewState()
	// Counts come from the stream: loop on them without preallocating, so
	// memory is bounded by what the stream actually holds.
	var dec instanceDecoder
	for i := uint64(0); i < header.GetInstanceCount(); i++ {
		in, state, err := dec.readInstanceRecord(br)
		if err != nil {
			return nil, 0, fmt.Errorf("instance record %d of %d: %w", i+1, header.GetInstanceCount(), noEOF(err))
		}
		if in.State, err = instanceState(in.Service, in.ID, state); err != nil {
			return nil, 0, fmt.Errorf("instance record %d: %w", i+1, err)
		}
		if _, dup := st.Get(in.Service, in.ID); dup {
			return nil, 0, fmt.Errorf("instance record %d: duplicate %s/%s", i+1, in.Service, in.ID)
		}
		st.put(in)
	}
	for i := uint64(0); i < header.GetNodeCount(); i++ {
		var rec fsmpb.NodeMeta
		if err := protodelim.UnmarshalFrom(br, &rec); err != nil {
			return nil, 0, fmt.Errorf("node record %d of %d: %w", i+1, header.GetNodeCount(), noEOF(err))
		}
		if rec.GetGrpcAddress() == "" && rec.GetHttpAddress() == "" {
			return nil, 0, fmt.Errorf("node record %d: node %q has no address", i+1, rec.GetNodeId())
		}
		if _, dup := st.Node(rec.GetNodeId()); dup {
			return nil, 0, fmt.Errorf("node record %d: duplicate node %q", i+1, rec.GetNodeId())
		}
		st.SetNode(&rec)
	}
	if err := readACLRecords(br, &header, st); err != nil {
		return nil, 0, err
	}
	if sec := header.GetBeatSecret(); len(sec) != 0 {
		st.beatSecret = slices.Clone(sec)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, 0, fmt.Errorf("after the last record: %w", err)
		}
		return nil, 0, errors.New("data after the last record counted in the header")
	}
	return st, header.GetIndex(), nil
}

// noEOF turns a clean end of stream where a record is due into
// io.ErrUnexpectedEOF: a truncated snapshot is an error, not an end.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// instanceState returns the state an instance record holds, or an error if
// it is not one.
func instanceState(service, id string, state int32) (InstanceState, error) {
	s := InstanceState(state)
	if state != int32(s) || (s != StateHealthy && s != StateSuspect) {
		return 0, fmt.Errorf("%s/%s has invalid state %d", service, id, state)
	}
	return s, nil
}

// readACLRecords reads the policy and token records that follow the node
// records into st.
func readACLRecords(br *bufio.Reader, header *fsmpb.SnapshotHeader, st *State) error {
	for i := uint64(0); i < header.GetAclPolicyCount(); i++ {
		var rec fsmpb.ACLPolicySet
		if err := protodelim.UnmarshalFrom(br, &rec); err != nil {
			return fmt.Errorf("policy record %d of %d: %w", i+1, header.GetAclPolicyCount(), noEOF(err))
		}
		if _, dup := st.Policy(rec.GetName()); dup {
			return fmt.Errorf("policy record %d: duplicate policy %q", i+1, rec.GetName())
		}
		st.ACLPolicySet(0, &rec)
	}
	for i := uint64(0); i < header.GetAclTokenCount(); i++ {
		var rec fsmpb.ACLTokenSet
		if err := protodelim.UnmarshalFrom(br, &rec); err != nil {
			return fmt.Errorf("token record %d of %d: %w", i+1, header.GetAclTokenCount(), noEOF(err))
		}
		if _, dup := st.acl.tokens[rec.GetAccessorId()]; dup {
			return fmt.Errorf("token record %d: duplicate token %q", i+1, rec.GetAccessorId())
		}
		if err := st.putToken(tokenFromProto(&rec)); err != nil {
			return fmt.Errorf("token record %d: %w", i+1, err)
		}
	}
	st.acl.bootstrapped = header.GetAclBootstrapped()
	st.acl.index = header.GetAclIndex()
	return nil
}
