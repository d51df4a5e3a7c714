package node

import (
	"errors"
	"fmt"
	"net"

	"github.com/regcenter/registry/udpbeat"
)

// udpBeats is the node's UDP beat receiver, off unless UDPBeatAddr is set.
type udpBeats struct {
	metrics *udpbeat.Metrics // registered with the node's registry
	server  *udpbeat.Server  // nil when off
}

// udpBeatErrors checks the UDP beat settings (Config.Validate).
func (c *Config) udpBeatErrors() []error {
	if c.UDPBeatAddr == "" {
		return nil
	}
	var errs []error
	if _, _, err := net.SplitHostPort(c.UDPBeatAddr); err != nil {
		errs = append(errs, fmt.Errorf("udp beat addr %q: %v", c.UDPBeatAddr, err))
	}
	if err := c.UDPBeat.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// serveUDPBeats binds UDPBeatAddr and starts the receiver, which commits
// through the node's rpc.Server (the beat group commit) and reads the
// node's replica.
func (n *Node) serveUDPBeats() error {
	if n.cfg.UDPBeatAddr == "" {
		return nil
	}
	conn, err := net.ListenPacket("udp", n.cfg.UDPBeatAddr)
	if err != nil {
		return fmt.Errorf("udp beat addr: %w", err)
	}
	cfg := n.cfg.UDPBeat
	cfg.Logger = n.log.With("component", "udpbeat")
	srv, err := udpbeat.NewServer(cfg, conn, n.rpc, fsmReplica{n}, n.udp.metrics)
	if err != nil {
		conn.Close()
		return err
	}
	n.udp.server = srv
	n.undo.add(n.closeUDPBeats)
	n.log.Info("udp beats enabled", "udp_beat_addr", srv.Addr().String())
	return nil
}

// closeUDPBeats stops the receiver, if it runs; safe to call twice.
func (n *Node) closeUDPBeats() {
	if n.udp.server == nil {
		return
	}
	if err := n.udp.server.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		n.log.Warn("closing the udp beat socket", "error", err)
	}
}

// UDPBeatAddr is the bound UDP beat address, or "" when UDP beats are off.
func (n *Node) UDPBeatAddr() string {
	if n.udp.server == nil {
		return ""
	}
	return n.udp.server.Addr().String()
}

// fsmReplica adapts the node's FSM to udpbeat.Replica.
type fsmReplica struct{ n *Node }

func (r fsmReplica) BeatSecret() []byte { return r.n.fsm.BeatSecret() }

func (r fsmReplica) LastUDPSeq(service, id string) (uint64, uint64, bool) {
	in, ok := r.n.fsm.Instance(service, id)
	return in.Incarnation, in.LastUDPSeq, ok
}
