package main

// The etcd comparison of W4's restarts (--etcd-binary): three etcd members
// on --ip, --w4-instances keys each on its own lease kept alive every
// --w4-interval, a follower SIGKILLed, left down for --w4-down (0.5 s
// longer each time) and restarted, --w4-restarts times; timed until its
// raft applied index reaches the leader's. The applied index is read with
// Maintenance.Status over gRPC (StatusResponse{leader=4,
// raftAppliedIndex=7}), checked once against 'etcdctl endpoint status -w
// json' on the running cluster; if they disagree, every poll runs etcdctl,
// whose process start (50-400 ms here under load) then bounds the figure's
// resolution.
//
// The load speaks etcd's gRPC API without etcd's Go client (which would
// pull etcd's module graph, and its grpc pin, into this module): the three
// request messages it sends are encoded with protowire, the responses are
// not decoded beyond the lease id. Field numbers from etcd's
// etcdserverpb/rpc.proto (stable since v3.0): LeaseGrantRequest{TTL=1,
// ID=2}, LeaseGrantResponse{ID=2}, PutRequest{key=1, value=2, lease=3},
// LeaseKeepAliveRequest{ID=1}.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/regcenter/registry/internal/proc"
)

// etcdOffset: the etcd members' client ports are --port-base +401..403,
// their peer ports +411..413.
const etcdOffset = 401

// rawCodec sends and receives already-encoded protobuf messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// etcdMember is one etcd process.
type etcdMember struct {
	*nodeProc
	clientURL string
}

// etcdStatus is the part of 'etcdctl endpoint status -w json' used here.
type etcdStatus struct {
	Endpoint string
	Status   struct {
		Header struct {
			MemberID uint64 `json:"member_id"`
		} `json:"header"`
		Leader           uint64 `json:"leader"`
		RaftAppliedIndex uint64 `json:"raftAppliedIndex"`
	}
}

func (b *bench) etcdRestarts(ctx context.Context) error {
	o := b.o.w4x
	dir, err := os.MkdirTemp("", "registry-bench-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const n = 3
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i+1, hostPort(b.o.ip, b.o.portBase+etcdOffset+10+i)))
	}
	members := make([]*etcdMember, n)
	defer func() {
		for _, m := range members {
			if m != nil {
				m.stop(3 * time.Second)
			}
		}
	}()
	for i := range n {
		id := fmt.Sprintf("e%d", i+1)
		client := hostPort(b.o.ip, b.o.portBase+etcdOffset+i)
		peer := hostPort(b.o.ip, b.o.portBase+etcdOffset+10+i)
		m := &etcdMember{clientURL: "http://" + client, nodeProc: &nodeProc{id: id, grpcAddr: client, spec: proc.Spec{
			Name: id, Binary: o.etcdBinary, LogPath: filepath.Join(dir, id+".log"),
			Args: []string{
				"--name", id, "--data-dir", filepath.Join(dir, id),
				"--listen-client-urls", "http://" + client, "--advertise-client-urls", "http://" + client,
				"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
				"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
				"--initial-cluster-token", "registry-bench", "--log-level", "warn", "--logger", "zap",
			},
		}}}
		members[i] = m
		if err := m.start(); err != nil {
			return fmt.Errorf("etcd %s: %w", id, err)
		}
	}
	b.logf("W4 etcd: three members (%s) on %s", o.etcdBinary, b.o.ip)
	var sts []etcdStatus
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		sts, err = b.etcdctlStatus(wctx, members...)
		if err == nil && len(sts) == n && sts[0].Status.Leader != 0 {
			break
		}
		if wctx.Err() != nil {
			return fmt.Errorf("etcd did not elect a leader: %v", err)
		}
		sleepCtx(wctx, 100*time.Millisecond)
	}
	var leader, victim *etcdMember
	for _, m := range members {
		for _, st := range sts {
			if st.Endpoint != m.clientURL {
				continue
			}
			if st.Status.Header.MemberID == st.Status.Leader {
				leader = m
			} else if victim == nil {
				victim = m
			}
		}
	}
	if leader == nil || victim == nil {
		return errors.New("etcd: no leader among the members' statuses")
	}
	var live []string
	for _, m := range members {
		if m != victim {
			live = append(live, m.grpcAddr)
		}
	}
	sctx, scancel := context.WithCancel(ctx) // ends the status connections
	defer scancel()
	statusOf := b.etcdStatusFunc(sctx, members, sts)
	// The load goes to the two members that stay up.
	stop, err := b.etcdLoad(ctx, live)
	if err != nil {
		return err
	}
	defer stop()
	sleepCtx(ctx, 2*b.o.w4Interval)

	var total, polls []time.Duration
	var each []string
	for i := range max(o.restarts, 1) {
		down := o.down + time.Duration(i)*500*time.Millisecond // as the registry's follower restarts
		b.logf("W4 etcd: restart %d: SIGKILL follower %s, restarting it after %v", i+1, victim.id, down)
		if err := victim.kill(); err != nil {
			return err
		}
		sleepCtx(ctx, down)
		tr := time.Now()
		if err := victim.start(); err != nil {
			return fmt.Errorf("restarting etcd %s: %w", victim.id, err)
		}
		var took time.Duration
		var ps []time.Duration
		for time.Since(tr) < 60*time.Second && ctx.Err() == nil {
			start := time.Now()
			sts := statusOf(ctx, leader, victim)
			ps = append(ps, time.Since(start))
			var la, va uint64
			var lok, vok bool
			for _, st := range sts {
				switch st.Endpoint {
				case leader.clientURL:
					la, lok = st.Status.RaftAppliedIndex, true
				case victim.clientURL:
					va, vok = st.Status.RaftAppliedIndex, true
				}
			}
			if lok && vok && va >= la {
				took = time.Since(tr)
				break
			}
			sleepCtx(ctx, 5*time.Millisecond)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		slices.Sort(ps)
		polls = append(polls, percentile(ps, 0.5))
		if took > 0 {
			total = append(total, took)
			each = append(each, fmt.Sprintf("%.1f", ms(took)))
		} else {
			each = append(each, "not-within-60s")
		}
		b.logf("W4 etcd: %s caught up %v after its restart (polls took %v)", victim.id, took.Round(time.Millisecond), polls[len(polls)-1].Round(time.Millisecond))
	}
	r := &result{Workload: "W4", Case: fmt.Sprintf("etcd: %d keys on leases kept alive, restart a follower", b.o.w4Instances), Params: map[string]any{
		"keys": b.o.w4Instances, "ttl_s": b.o.w4TTL.Seconds(), "keepalive_interval_s": b.o.w4Interval.Seconds(), "down_ms": ms(o.down), "etcd": o.etcdBinary,
	}}
	slices.Sort(total)
	r.add("restarts", len(each))
	slices.Sort(polls)
	r.addMs("restart_status_poll_p50", percentile(polls, 0.5))
	r.add("restart_caught_up_each_ms", strings.Join(each, " "))
	r.addMs("restart_caught_up_p50", percentile(total, 0.5))
	if len(total) > 0 {
		r.addMs("restart_caught_up_max", total[len(total)-1])
	}
	b.rep.emit(r)
	return nil
}

// etcdctlStatus runs 'etcdctl endpoint status -w json' on ms; a member
// that does not answer is missing from the result.
func (b *bench) etcdctlStatus(ctx context.Context, ms ...*etcdMember) ([]etcdStatus, error) {
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.o.w4x.etcdctlBinary, "--endpoints", strings.Join(eps, ","),
		"--dial-timeout", "1s", "--command-timeout", "1s", "endpoint", "status", "-w", "json")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	runErr := cmd.Run()
	var sts []etcdStatus
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &sts); err != nil {
		return nil, fmt.Errorf("etcdctl: %v (%v: %s)", err, runErr, strings.TrimSpace(errOut.String()))
	}
	return sts, nil
}

// etcdLoad grants a lease with --w4-ttl per key, puts --w4-instances keys
// on them, and keeps every lease alive every --w4-interval over
// --w4-clients keep-alive streams spread over addrs, until the returned
// stop is called.
func (b *bench) etcdLoad(ctx context.Context, addrs []string) (stop func(), err error) {
	nClients := max(b.o.w4Clients, 1)
	conns := make([]*grpc.ClientConn, nClients)
	closeConns := func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}
	for i := range conns {
		if conns[i], err = grpc.NewClient(addrs[i%len(addrs)], grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}))); err != nil {
			closeConns()
			return nil, err
		}
	}
	b.logf("W4 etcd: granting %d leases and putting a key on each", b.o.w4Instances)
	leases := make([][]int64, nClients)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	work := make(chan int)
	for w := range max(b.o.regWorkers, 1) {
		wg.Go(func() {
			for i := range work {
				cc := conns[(i+w)%nClients]
				id, err := etcdGrantAndPut(ctx, cc, i, b.o.w4TTL)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					leases[i%nClients] = append(leases[i%nClients], id)
				}
				mu.Unlock()
			}
		})
	}
	for i := range b.o.w4Instances {
		work <- i
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		closeConns()
		return nil, fmt.Errorf("etcd load: %d of %d keys failed, first: %w", len(errs), b.o.w4Instances, errs[0])
	}
	lctx, cancel := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	for i, cc := range conns {
		ids := leases[i]
		lwg.Go(func() { etcdKeepAlive(lctx, cc, ids, b.o.w4Interval) })
	}
	return func() { cancel(); lwg.Wait(); closeConns() }, nil
}

func etcdGrantAndPut(ctx context.Context, cc *grpc.ClientConn, i int, ttl time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req := protowire.AppendTag(nil, 1, protowire.VarintType)
	req = protowire.AppendVarint(req, uint64(max(int64(ttl/time.Second), 1)))
	var resp []byte
	if err := cc.Invoke(ctx, "/etcdserverpb.Lease/LeaseGrant", &req, &resp); err != nil {
		return 0, err
	}
	id, err := varintField(resp, 2)
	if err != nil {
		return 0, err
	}
	put := protowire.AppendTag(nil, 1, protowire.BytesType)
	put = protowire.AppendBytes(put, fmt.Appendf(nil, "w4/etcd-%d", i))
	put = protowire.AppendTag(put, 2, protowire.BytesType)
	put = protowire.AppendBytes(put, []byte("127.0.0.1:80"))
	put = protowire.AppendTag(put, 3, protowire.VarintType)
	put = protowire.AppendVarint(put, uint64(id))
	if err := cc.Invoke(ctx, "/etcdserverpb.KV/Put", &put, &resp); err != nil {
		return 0, err
	}
	return int64(id), nil
}

// varintField returns the varint field num of a protobuf message.
func varintField(b []byte, num protowire.Number) (uint64, error) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			return v, nil
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
	}
	return 0, fmt.Errorf("field %d not found", num)
}

// etcdKeepAlive keeps ids alive on one stream, each every interval,
// spread evenly, reopening the stream if it breaks, until ctx ends.
func etcdKeepAlive(ctx context.Context, cc *grpc.ClientConn, ids []int64, interval time.Duration) {
	desc := &grpc.StreamDesc{StreamName: "LeaseKeepAlive", ServerStreams: true, ClientStreams: true}
	for ctx.Err() == nil {
		st, err := cc.NewStream(ctx, desc, "/etcdserverpb.Lease/LeaseKeepAlive")
		if err != nil {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		go func() {
			var resp []byte
			for st.RecvMsg(&resp) == nil {
			}
		}()
		gap := interval / time.Duration(max(len(ids), 1))
		tick := time.NewTicker(max(gap, 100*time.Microsecond))
	send:
		for ctx.Err() == nil {
			for _, id := range ids {
				req := protowire.AppendTag(nil, 1, protowire.VarintType)
				req = protowire.AppendVarint(req, uint64(id))
				if err := st.SendMsg(&req); err != nil {
					break send
				}
				select {
				case <-ctx.Done():
					break send
				case <-tick.C:
				}
			}
		}
		tick.Stop()
	}
}

// etcdStatusFunc returns how the restarts read the members' applied
// indexes: over gRPC if that agrees with etcdctl's reading sts of the same
// members (leader equal, applied index within 1,000 of it: the cluster is
// idle but for its own entries), else with etcdctl.
func (b *bench) etcdStatusFunc(ctx context.Context, members []*etcdMember, sts []etcdStatus) func(context.Context, ...*etcdMember) []etcdStatus {
	viaCtl := func(ctx context.Context, ms ...*etcdMember) []etcdStatus {
		sts, _ := b.etcdctlStatus(ctx, ms...)
		return sts
	}
	conns := map[*etcdMember]*grpc.ClientConn{}
	for _, m := range members {
		cc, err := grpc.NewClient(m.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 50 * time.Millisecond},
				MinConnectTimeout: time.Second,
			}))
		if err != nil {
			b.logf("W4 etcd: status over gRPC: %v; polling with etcdctl", err)
			return viaCtl
		}
		context.AfterFunc(ctx, func() { cc.Close() })
		conns[m] = cc
	}
	viaGRPC := func(ctx context.Context, ms ...*etcdMember) []etcdStatus {
		var out []etcdStatus
		for _, m := range ms {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			req, resp := []byte{}, []byte(nil)
			err := conns[m].Invoke(cctx, "/etcdserverpb.Maintenance/Status", &req, &resp)
			cancel()
			if err != nil {
				continue
			}
			var st etcdStatus
			st.Endpoint = m.clientURL
			st.Status.Leader, _ = varintField(resp, 4)
			st.Status.RaftAppliedIndex, _ = varintField(resp, 7)
			out = append(out, st)
		}
		return out
	}
	got := viaGRPC(ctx, members...)
	if len(got) != len(sts) {
		b.logf("W4 etcd: status over gRPC answered %d of %d members; polling with etcdctl", len(got), len(sts))
		return viaCtl
	}
	byURL := map[string]etcdStatus{}
	for _, st := range sts {
		byURL[st.Endpoint] = st
	}
	for i := range got {
		g, c := got[i].Status, byURL[got[i].Endpoint].Status
		if g.Leader != c.Leader || g.RaftAppliedIndex < c.RaftAppliedIndex || g.RaftAppliedIndex > c.RaftAppliedIndex+1000 {
			b.logf("W4 etcd: status over gRPC (leader %d, applied %d) disagrees with etcdctl's (%d, %d); polling with etcdctl",
				g.Leader, g.RaftAppliedIndex, c.Leader, c.RaftAppliedIndex)
			return viaCtl
		}
	}
	b.logf("W4 etcd: status over gRPC agrees with etcdctl (applied %d vs %d); polling over gRPC", got[0].Status.RaftAppliedIndex, sts[0].Status.RaftAppliedIndex)
	return viaGRPC
}
