package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/validate"
)

// beatItem is one beat submitted to the group commit. It carries whether
// its request was forwarded to this node: the batcher flushes under a
// context of its own, so the mark of the incoming call is not seen there.
type beatItem struct {
	ref       *registryv1.InstanceRef
	forwarded bool
	// authorization is the caller's bearer value: a follower forwards each
	// caller's beats under the caller's token, which the leader checks.
	authorization string
	// udpSeq and datagram are set for a beat that came as a UDP datagram
	// (see udpbeats.go): the sequence number goes into the log for the
	// FSM's replay rule, and a follower forwards the datagram itself, which
	// the leader authenticates again.
	udpSeq   uint64
	datagram []byte
}

// beatOutcome is the result of one beat in a flushed batch.
type beatOutcome struct {
	index       uint64                    // the Raft index of the batch
	rejection   *registryv1.BeatRejection // nil when the beat was applied
	recommended time.Duration             // the batch's recommended interval, or 0
}

// Beat implements registry.v1.Registry.
func (s *Server) Beat(ctx context.Context, req *registryv1.BeatRequest) (*registryv1.BeatResponse, error) {
	if err := validate.NormalizeBeat(req); err != nil {
		return nil, s.toStatus(err)
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if forwarded(ctx) {
		if !s.cluster.IsLeader() {
			return nil, s.toStatus(ErrNotLeader)
		}
	} else {
		s.metrics.beatsReceived.Add(float64(len(req.Beats)))
	}
	resp, err := s.beat(ctx, req, forwarded(ctx))
	if err != nil {
		return nil, s.toStatus(err)
	}
	return resp, nil
}

// beat submits a validated request to the group commit and waits for it;
// fwd says the request was forwarded to this node by another.
func (s *Server) beat(ctx context.Context, req *registryv1.BeatRequest, fwd bool) (*registryv1.BeatResponse, error) {
	start := time.Now()
	items := make([]beatItem, len(req.Beats))
	auth := incomingAuthorization(ctx)
	for i, r := range req.Beats {
		items[i] = beatItem{ref: r, forwarded: fwd, authorization: auth}
	}
	outcomes, err := s.beats.Submit(ctx, items)
	if err != nil {
		return nil, err
	}
	s.metrics.beatCommitLatency.Observe(time.Since(start).Seconds())
	resp := &registryv1.BeatResponse{Seq: req.Seq}
	var recommended time.Duration
	for _, o := range outcomes {
		resp.Index = max(resp.Index, o.index)
		recommended = max(recommended, o.recommended)
		if o.rejection != nil {
			resp.Rejected = append(resp.Rejected, o.rejection)
		}
	}
	if recommended > 0 {
		resp.RecommendedInterval = durationpb.New(recommended)
	}
	return resp, nil
}

// defaultBeatInflight is the default Config.Beats.MaxInflight. With one
// flush at a time a leader commits at most MaxItems (10,000) beats per
// commit round, and a round slows when registrations fill the log: in the
// million-instance run (registry-bench -workloads scale) rounds of 0.5-1.5 s
// while 15,000 registrations a second went through held the beats to
// 7,000-20,000 a second of the 100,000 due, the queue overflowed and
// instances whose clients beat in time expired. Four rounds under way
// carry four times that, and the fsm keeps an instance's LastBeatAt from
// moving back when two batches commit out of their stamps' order.
const defaultBeatInflight = 4

// defaultBeats returns the default Config.Beats: groupcommit's defaults
// with defaultBeatInflight flushes under way.
func defaultBeats() groupcommit.Config {
	c := groupcommit.DefaultConfig()
	c.MaxInflight = defaultBeatInflight
	return c
}

// BeatBacklog returns how long ago this node received the oldest beat
// whose batch has not committed yet (or, on a follower, not been
// forwarded), zero when none waits. The leader's expiry checker judges
// deadlines that much earlier (beatcheck.Config.Backlog), so that a beat
// that reached the leader in time saves its instance however long the
// leader takes to commit it.
func (s *Server) BeatBacklog() time.Duration {
	if at, ok := s.beats.Oldest(); ok {
		return time.Since(at)
	}
	return 0
}

// flushBeats is the group commit's flush: on the leader it proposes one
// BeatBatch; on a follower it forwards the batch to the leader in one call,
// unless it holds a beat that was forwarded to this node already: then it
// fails with ErrNotLeader, as forwardOnce does, for leadership moved after
// the beat was accepted.
func (s *Server) flushBeats(ctx context.Context, items []beatItem) ([]beatOutcome, error) {
	refs := make([]*registryv1.InstanceRef, len(items))
	seqs := make([]uint64, len(items))
	anyForwarded := false
	for i, it := range items {
		refs[i], seqs[i] = it.ref, it.udpSeq
		anyForwarded = anyForwarded || it.forwarded
	}
	var (
		index       uint64
		rejected    []*registryv1.BeatRejection
		recommended time.Duration
	)
	if s.cluster.IsLeader() {
		// One allocation for every beat of the batch, not one per beat.
		beats := make([]fsmpb.Beat, len(refs))
		cmd := &fsmpb.BeatBatch{Beats: make([]*fsmpb.Beat, len(refs)), NowUnixNs: s.now()}
		for i, r := range refs {
			b := &beats[i]
			b.Service, b.Id, b.Incarnation, b.UdpSeq = r.Service, r.Id, r.Incarnation, seqs[i]
			cmd.Beats[i] = b
		}
		res, err := fsm.Propose[*fsm.BeatResult](ctx, s.applier, cmd)
		if err != nil {
			return nil, err
		}
		index = res.Index
		s.metrics.beatBatchSize.Observe(float64(len(refs)))
		s.metrics.beatsApplied.Add(float64(len(refs) - len(res.Rejected)))
		for _, rj := range res.Rejected {
			s.metrics.beatsRejected.WithLabelValues(rejectLabel(rj.Reason)).Inc()
			rejected = append(rejected, &registryv1.BeatRejection{
				Instance:           &registryv1.InstanceRef{Service: rj.Service, Id: rj.ID, Incarnation: rj.Incarnation},
				Reason:             registryv1.BeatRejectReason(rj.Reason),
				CurrentIncarnation: rj.Current,
				UdpSeq:             rj.UDPSeq,
			})
		}
		recommended = s.recommendInterval(refs)
	} else {
		if anyForwarded {
			return nil, ErrNotLeader
		}
		return s.forwardBeats(ctx, items)
	}
	out, err := matchRejections(refs, seqs, rejected, index)
	for i := range out {
		out[i].recommended = recommended
	}
	return out, err
}

// forwardBeats forwards a follower's batch to the leader: one call per
// distinct caller token (one call when ACLs are off), each under that
// token, so that the leader checks every beat against its sender's rights.
func (s *Server) forwardBeats(ctx context.Context, items []beatItem) ([]beatOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	groups := make(map[string][]int) // authorization → positions in items
	var order []string
	for i, it := range items {
		key := it.authorization
		if it.datagram != nil {
			key = udpGroup
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	out := make([]beatOutcome, len(items))
	for _, auth := range order {
		pos := groups[auth]
		refs := make([]*registryv1.InstanceRef, len(pos))
		seqs := make([]uint64, len(pos))
		for j, p := range pos {
			refs[j], seqs[j] = items[p].ref, items[p].udpSeq
		}
		var (
			resp *registryv1.BeatResponse
			err  error
		)
		if auth == udpGroup {
			resp, err = s.forwardUDPBeats(ctx, items, pos)
		} else {
			var (
				fctx context.Context
				conn *grpc.ClientConn
			)
			fctx, conn, err = s.toLeaderAs(ctx, registryv1.Registry_Beat_FullMethodName, auth)
			if err != nil {
				return nil, err
			}
			resp, err = registryv1.NewRegistryClient(conn).Beat(fctx, &registryv1.BeatRequest{Beats: refs})
		}
		if err != nil {
			return nil, err
		}
		got, err := matchRejections(refs, seqs, resp.Rejected, resp.Index)
		if err != nil {
			return nil, err
		}
		for j, p := range pos {
			out[p] = got[j]
			out[p].recommended = resp.GetRecommendedInterval().AsDuration()
		}
	}
	return out, nil
}

// recommendInterval counts an applied batch and, while the leader takes
// more than MaxBeatRate beats a second, returns the interval that brings the
// rate back under it: (rate / MaxBeatRate) × the shortest interval among
// the batch's instances. Zero means keep your own.
func (s *Server) recommendInterval(refs []*registryv1.InstanceRef) time.Duration {
	rate := s.rate.add(len(refs))
	if rate <= s.cfg.MaxBeatRate {
		return 0
	}
	var shortest time.Duration
	for _, r := range refs {
		if in, ok := s.state.Instance(r.Service, r.Id); ok && (shortest == 0 || in.BeatInterval < shortest) {
			shortest = in.BeatInterval
		}
	}
	return time.Duration(float64(shortest) * float64(rate) / float64(s.cfg.MaxBeatRate))
}

// rateMeter counts events per second: the rate is the count of the last
// whole second.
type rateMeter struct {
	clock func() time.Time
	mu    sync.Mutex
	sec   int64
	cur   int
	last  int
}

// add counts n events and returns the current rate.
func (m *rateMeter) add(n int) int {
	sec := m.clock().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case sec == m.sec:
	case sec == m.sec+1:
		m.sec, m.last, m.cur = sec, m.cur, 0
	default:
		m.sec, m.last, m.cur = sec, 0, 0
	}
	m.cur += n
	return max(m.last, m.cur)
}

// matchRejections gives each beat its outcome. Rejections come in the order
// of the beats they reject, so one pass pairs them; seqs (the beats' UDP
// sequence numbers, 0 for other beats) tell apart two UDP beats of one
// instance.
func matchRejections(refs []*registryv1.InstanceRef, seqs []uint64, rejected []*registryv1.BeatRejection, index uint64) ([]beatOutcome, error) {
	out := make([]beatOutcome, len(refs))
	j := 0
	for i, r := range refs {
		out[i].index = index
		var seq uint64
		if seqs != nil {
			seq = seqs[i]
		}
		if j < len(rejected) {
			rj := rejected[j].GetInstance()
			if rj.GetService() == r.Service && rj.GetId() == r.Id && rj.GetIncarnation() == r.Incarnation && rejected[j].GetUdpSeq() == seq {
				out[i].rejection = rejected[j]
				j++
			}
		}
	}
	if j != len(rejected) {
		return nil, fmt.Errorf("beat batch at index %d: %d of %d rejections match no beat", index, len(rejected)-j, len(rejected))
	}
	return out, nil
}

type frameResult struct {
	seq  uint64
	resp *registryv1.BeatResponse
	err  error
}

// BeatStream implements registry.v1.Registry. Frames are committed
// concurrently (at most MaxInflightBeatFrames at once) and answered in the
// order they arrived. A frame that could not be committed because of
// leadership (see retryFrame) is answered with a BeatRetry and the stream
// stays open: a failover costs the client one resend, not a reconnect. A
// bad frame or any other failure ends the stream with its status; the
// client reopens it, on another node if need be.
func (s *Server) BeatStream(stream grpc.BidiStreamingServer[registryv1.BeatRequest, registryv1.BeatResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	inflight := make(chan chan frameResult, s.cfg.MaxInflightBeatFrames)
	recvErr := make(chan error, 1)
	if !s.goTracked(func() {
		defer close(inflight)
		recvErr <- s.receiveBeatFrames(ctx, stream, inflight)
	}) {
		return s.toStatus(ErrShuttingDown)
	}
	for ch := range inflight {
		var r frameResult
		select {
		case r = <-ch:
		case <-ctx.Done():
			return s.toStatus(ctx.Err())
		case <-s.done:
			return s.toStatus(ErrShuttingDown)
		}
		if r.err != nil {
			retry := s.retryFrame(r.err)
			if retry == nil {
				return s.toStatus(r.err)
			}
			r.resp = &registryv1.BeatResponse{Seq: r.seq, Retry: retry}
		}
		if err := stream.Send(r.resp); err != nil {
			return err
		}
	}
	if err := <-recvErr; err != nil && !errors.Is(err, io.EOF) {
		return s.toStatus(err)
	}
	return nil
}

// receiveBeatFrames reads frames until the client half-closes (io.EOF),
// the stream fails or the server closes, and starts the commit of each.
func (s *Server) receiveBeatFrames(ctx context.Context, stream grpc.BidiStreamingServer[registryv1.BeatRequest, registryv1.BeatResponse], inflight chan<- chan frameResult) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		ch := make(chan frameResult, 1)
		select {
		case inflight <- ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrShuttingDown
		}
		if err := validate.NormalizeBeat(req); err != nil {
			ch <- frameResult{err: err}
			return err
		}
		// A frame is one write, however many beats it carries; a frame
		// over the client's rate ends the stream with its RetryInfo.
		if err := s.admitWrite(ctx); err != nil {
			ch <- frameResult{err: err}
			return err
		}
		s.metrics.beatsReceived.Add(float64(len(req.Beats)))
		if !s.goTracked(func() {
			resp, err := s.beat(ctx, req, forwarded(ctx))
			ch <- frameResult{seq: req.Seq, resp: resp, err: err}
		}) {
			ch <- frameResult{err: ErrShuttingDown}
			return ErrShuttingDown
		}
	}
}

// retryFrame returns the BeatRetry that answers a frame whose commit failed
// with err, or nil when err must end the stream. A frame is retried when
// its status is UNAVAILABLE (not the leader, no leader, leadership lost, a
// leader that could not be reached) unless this node is stopping: then the
// client had better reopen the stream elsewhere.
func (s *Server) retryFrame(err error) *registryv1.BeatRetry {
	if errors.Is(err, ErrShuttingDown) || errors.Is(err, groupcommit.ErrClosed) || errors.Is(err, raft.ErrRaftShutdown) {
		return nil
	}
	st := status.Convert(s.toStatus(err))
	if st.Code() != codes.Unavailable {
		return nil
	}
	return &registryv1.BeatRetry{
		Message: st.Message(),
		Outcome: detailOf[*registryv1.WriteOutcome](st),
		Leader:  detailOf[*registryv1.LeaderHint](st),
	}
}
