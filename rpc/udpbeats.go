package rpc

import (
	"context"
	"fmt"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/udpbeat"
	"github.com/regcenter/registry/validate"
)

// UDP beats (package udpbeat) join the beat group commit here.
//
// Permission: with ACLs on, a gRPC beat needs service write on its service.
// A UDP datagram carries no token; its MAC under the registration's beat
// key is its permission, since only a Register that had service write on
// the service was given that key (in its response, over the authenticated
// channel). A token revoked later does not revoke keys already handed out:
// deregister the instance (or register a new incarnation) to do that.
//
// Replay: the datagram's sequence number goes into the log with the beat,
// and the FSM applies it only above the last one applied (fsm's replay
// rule), so a datagram replayed to any node, or after a leader change, is
// rejected everywhere, deterministically.

// udpGroup keys a follower's UDP beats when it forwards a batch: gRPC
// metadata values cannot hold a NUL, so no bearer value collides with it.
const udpGroup = "\x00udp"

// ensureBeatSecret has the leader propose a cluster beat secret if its
// replica has none, and returns the replica's secret. The secret is
// generated here, at the proposer, never in Apply; racing proposals are
// harmless, since the first one applied wins.
func (s *Server) ensureBeatSecret(ctx context.Context) ([]byte, error) {
	if sec := s.state.BeatSecret(); sec != nil {
		return sec, nil
	}
	sec, err := udpbeat.NewSecret()
	if err != nil {
		return nil, err
	}
	if _, err := fsm.Propose[*fsm.BeatSecretResult](ctx, s.applier, &fsmpb.BeatSecretSet{Secret: sec}); err != nil {
		return nil, err
	}
	return s.state.BeatSecret(), nil
}

// UDPBeats commits beats that came as UDP datagrams, already parsed and
// authenticated by the caller (the node's UDP listener), through the beat
// group commit, and returns the outcome of each in order. On a follower
// they are forwarded to the leader as datagrams. The error is the batch's
// (no leader, leadership lost, shutting down).
func (s *Server) UDPBeats(ctx context.Context, beats []udpbeat.Received) ([]udpbeat.Outcome, error) {
	return s.submitUDP(ctx, beats, false)
}

func (s *Server) submitUDP(ctx context.Context, beats []udpbeat.Received, fwd bool) ([]udpbeat.Outcome, error) {
	items := make([]beatItem, len(beats))
	for i, b := range beats {
		items[i] = beatItem{
			ref:       &registryv1.InstanceRef{Service: b.Beat.Service, Id: b.Beat.ID, Incarnation: b.Beat.Incarnation},
			forwarded: fwd,
			udpSeq:    b.Beat.Seq,
			datagram:  b.Datagram,
		}
	}
	outcomes, err := s.beats.Submit(ctx, items)
	if err != nil {
		return nil, err
	}
	out := make([]udpbeat.Outcome, len(outcomes))
	for i, o := range outcomes {
		out[i].Index = o.index
		if rj := o.rejection; rj != nil {
			out[i].Status = udpbeat.Status(rj.Reason) // UNKNOWN, FENCED, REPLAY share the numbers
			out[i].Current = rj.CurrentIncarnation
		}
	}
	return out, nil
}

// forwardUDPBeats forwards the UDP beats at pos in items to the leader.
func (s *Server) forwardUDPBeats(ctx context.Context, items []beatItem, pos []int) (*registryv1.BeatResponse, error) {
	req := &registryv1.ForwardUdpBeatsRequest{Datagrams: make([][]byte, len(pos))}
	for j, p := range pos {
		req.Datagrams[j] = items[p].datagram
	}
	fctx, conn, err := s.toLeaderAs(ctx, registryv1.Registry_ForwardUdpBeats_FullMethodName, "")
	if err != nil {
		return nil, err
	}
	return registryv1.NewRegistryClient(conn).ForwardUdpBeats(fctx, req)
}

// ForwardUdpBeats implements registry.v1.Registry: the leader's end of
// forwardUDPBeats. It authenticates every datagram again against its own
// replica (it trusts no follower), then commits them like its own.
func (s *Server) ForwardUdpBeats(ctx context.Context, req *registryv1.ForwardUdpBeatsRequest) (*registryv1.BeatResponse, error) {
	if n := len(req.GetDatagrams()); n == 0 || n > validate.MaxBeatBatch {
		return nil, s.toStatus(validate.FieldErrorf("datagrams", "has %d datagrams, want 1 to %d", n, validate.MaxBeatBatch))
	}
	if err := s.admitWrite(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	if !s.cluster.IsLeader() {
		return nil, s.toStatus(ErrNotLeader)
	}
	secret := s.state.BeatSecret()
	beats := make([]udpbeat.Received, len(req.Datagrams))
	for i, d := range req.Datagrams {
		b, err := udpbeat.Parse(d)
		if err == nil && (secret == nil || !udpbeat.Verify(d, udpbeat.DeriveKey(secret, b.Service, b.ID, b.Incarnation))) {
			err = udpbeat.ErrBadMAC
		}
		if err != nil {
			return nil, s.toStatus(validate.FieldErrorf(fmt.Sprintf("datagrams[%d]", i), "%v", err))
		}
		beats[i] = udpbeat.Received{Beat: b, Datagram: d}
	}
	outcomes, err := s.submitUDP(ctx, beats, true)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &registryv1.BeatResponse{}
	for i, o := range outcomes {
		resp.Index = max(resp.Index, o.Index)
		if o.Status != udpbeat.StatusApplied {
			b := beats[i].Beat
			resp.Rejected = append(resp.Rejected, &registryv1.BeatRejection{
				Instance:           &registryv1.InstanceRef{Service: b.Service, Id: b.ID, Incarnation: b.Incarnation},
				Reason:             registryv1.BeatRejectReason(o.Status),
				CurrentIncarnation: o.Current,
				UdpSeq:             b.Seq,
			})
		}
	}
	return resp, nil
}
