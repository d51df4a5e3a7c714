package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/udpbeat"
)

// udpOptions are the flags of the UDP workload: how many beat datagrams a
// second one node takes in (README, "UDP beats").
type udpOptions struct {
	instances int
	rates     string
	senders   int
	hold      time.Duration
	warmup    time.Duration
	target    string
	// w1Instances and alongside: the udp-w1 workload runs a W1 step of
	// w1Instances (batched) with UDP beats at alongside datagrams/s to
	// the leader during the hold.
	w1Instances int
	alongside   int
}

func udpFlags(fs *flag.FlagSet, o *udpOptions) {
	fs.IntVar(&o.instances, "udp-instances", 10_000, "UDP: registered instances the datagrams beat, round robin")
	fs.StringVar(&o.rates, "udp-rates", "10000,25000,50000,100000", "UDP: offered datagrams per second to step through")
	fs.IntVar(&o.senders, "udp-senders", 4, "UDP: sender goroutines, each from its own loopback address (127.0.0.221 and up), so that the node's per-source rate limit does not cap the offered load")
	fs.DurationVar(&o.hold, "udp-hold", 10*time.Second, "UDP: how long each rate is measured (after the warm-up)")
	fs.DurationVar(&o.warmup, "udp-warmup", 2*time.Second, "UDP: sending before each measurement")
	fs.StringVar(&o.target, "udp-target", "leader", "UDP: the node the datagrams go to: leader or follower (which forwards them)")
	fs.IntVar(&o.w1Instances, "udp-w1-instances", 50_000, "udp-w1: the W1 step (batched gRPC beats) that runs alongside each UDP rate of --udp-rates")
}

// udpW1 runs, for each rate of --udp-rates, one batched W1 step of
// --udp-w1-instances gRPC beaters while UDP datagrams go to the leader at
// that rate: the W1 verdict (p99 within --w1-max-p99) says whether the
// gRPC beats kept their latency.
func (b *bench) udpW1(ctx context.Context) error {
	if err := b.o.udp.check(); err != nil {
		return err
	}
	for _, rs := range splitList(b.o.udp.rates) {
		rate, err := strconv.Atoi(rs)
		if err != nil || rate <= 0 {
			return fmt.Errorf("--udp-rates: %q is not a positive count", rs)
		}
		b.o.udp.alongside = rate
		if _, err := b.w1Step(ctx, "batched", 0, b.o.udp.w1Instances); err != nil {
			return err
		}
	}
	b.o.udp.alongside = 0
	return nil
}

// alongsideUDP is the UDP load of a udp-w1 step; its zero value does
// nothing.
type alongsideUDP struct {
	ctx       context.Context
	stopSend  context.CancelFunc
	wg        sync.WaitGroup
	target    *nodeProc
	instances int
	rate      int
	before    map[string]float64
	t0        time.Time
	err       error
}

// udpAlongside, with an alongside rate set (udp-w1), registers the UDP
// instances through the leader and starts sending to it, before the W1
// step samples the leader, so that the registrations stay out of the
// step's figures; begin marks the start of the hold, end adds the UDP
// figures of the hold to the result, stop ends the senders. Without an
// alongside rate it returns a value that does nothing.
func (b *bench) udpAlongside(ctx context.Context, c *cluster) (*alongsideUDP, error) {
	o := b.o.udp
	if o.alongside == 0 || c.nodes == nil {
		return &alongsideUDP{}, nil
	}
	leader, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return nil, err
	}
	a := &alongsideUDP{ctx: ctx, target: c.node(leader), rate: o.alongside}
	keyed, err := b.udpRegister(ctx, c, leader)
	if err != nil {
		return nil, err
	}
	a.instances = len(keyed)
	sctx, stop := context.WithCancel(ctx)
	a.stopSend = stop
	var sent atomic.Int64
	if err := b.udpStartSenders(sctx, &a.wg, a.target, keyed, make([]uint64, len(keyed)), o.alongside, &sent); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

func (a *alongsideUDP) begin() {
	if a.target == nil {
		return
	}
	a.before, a.err = udpCounters(a.ctx, a.target.httpAddr)
	a.t0 = time.Now()
}

func (a *alongsideUDP) end(r *result) {
	if a.target == nil {
		return
	}
	after, err := udpCounters(a.ctx, a.target.httpAddr)
	elapsed := time.Since(a.t0).Seconds()
	a.stop()
	r.Params["udp_offered_per_s"] = a.rate
	r.Params["udp_instances"] = a.instances
	if err = errors.Join(a.err, err); err != nil {
		r.add("udp_error", err.Error())
		return
	}
	r.add("udp_accepted_per_s", round1((after["accepted"]-a.before["accepted"])/elapsed))
}

// stop ends the senders and waits for them; safe to call twice.
func (a *alongsideUDP) stop() {
	if a.stopSend != nil {
		a.stopSend()
		a.wg.Wait()
	}
}

// check names the first flag that cannot work.
func (o udpOptions) check() error {
	if o.senders < 1 || o.senders > 30 || o.instances < o.senders {
		return fmt.Errorf("--udp-senders is %d, want 1 to 30 (and at most --udp-instances, %d)", o.senders, o.instances)
	}
	if o.target != "leader" && o.target != "follower" {
		return fmt.Errorf("--udp-target is %q, want leader or follower", o.target)
	}
	return nil
}

// udpKeyed is a registered instance and its beat key.
type udpKeyed struct {
	id  string
	key []byte
}

// udp registers the instances (TTL 60 s, so none expires whatever the
// datagrams do), then, for each rate, sends datagrams at that rate to the
// target node and reads from its /metrics how many it accepted (committed
// and applied) and rejected, by reason.
func (b *bench) udp(ctx context.Context) error {
	o := b.o.udp
	if err := o.check(); err != nil {
		return err
	}
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if c.nodes == nil {
		return fmt.Errorf("udp: needs the local nodes (no --endpoints): it reads their UDP addresses and /metrics")
	}
	leaderAddr, err := c.waitLeader(ctx, c.endpoints)
	if err != nil {
		return err
	}
	target := c.node(leaderAddr)
	if o.target == "follower" {
		for _, p := range c.nodes {
			if p.grpcAddr != leaderAddr {
				target = p
				break
			}
		}
	}
	keyed, err := b.udpRegister(ctx, c, leaderAddr)
	if err != nil {
		return err
	}

	seqs := make([]uint64, len(keyed)) // per instance; each sender owns its share
	for _, rs := range splitList(o.rates) {
		rate, err := strconv.Atoi(rs)
		if err != nil || rate <= 0 {
			return fmt.Errorf("--udp-rates: %q is not a positive count", rs)
		}
		r, err := b.udpStep(ctx, target, keyed, seqs, rate)
		if err != nil {
			return err
		}
		b.rep.emit(r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// udpRegister registers --udp-instances instances through the leader
// (TTL 60 s, so none expires whatever the datagrams do) and returns their
// beat keys.
func (b *bench) udpRegister(ctx context.Context, c *cluster, leaderAddr string) ([]udpKeyed, error) {
	o := b.o.udp
	conn, err := c.conn(leaderAddr)
	if err != nil {
		return nil, err
	}
	b.logf("udp: registering %d instances", o.instances)
	keyed := make([]udpKeyed, o.instances)
	rctx, cancel := context.WithTimeout(ctx, b.o.stepTimeout)
	defer cancel()
	reg := registryv1.NewRegistryClient(conn)
	var (
		regWG   sync.WaitGroup
		errOnce sync.Once
		regErr  error
	)
	slots := make(chan struct{}, b.o.regWorkers)
	for i := range keyed {
		slots <- struct{}{}
		regWG.Add(1)
		go func() {
			defer func() { <-slots; regWG.Done() }()
			id := fmt.Sprintf("u%06d", i)
			resp, err := reg.Register(rctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
				Service: "udp-bench", Id: id, Address: "127.0.0.1:9", Incarnation: 1,
				BeatInterval: durationpb.New(10 * time.Second), SuspectAfter: durationpb.New(30 * time.Second), Ttl: durationpb.New(60 * time.Second),
			}})
			if err != nil {
				errOnce.Do(func() { regErr = fmt.Errorf("register %s: %w", id, err); cancel() })
				return
			}
			keyed[i] = udpKeyed{id: id, key: resp.BeatKey}
		}()
	}
	regWG.Wait()
	return keyed, regErr
}

// udpStartSenders starts --udp-senders goroutines (tracked by wg, ended
// by ctx) that send to target at rate in all, each from its own loopback
// address.
func (b *bench) udpStartSenders(ctx context.Context, wg *sync.WaitGroup, target *nodeProc, keyed []udpKeyed, seqs []uint64, rate int, sent *atomic.Int64) error {
	o := b.o.udp
	raddr, err := net.ResolveUDPAddr("udp", target.udpAddr)
	if err != nil {
		return err
	}
	for s := range o.senders {
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(221+s))}, raddr)
		if err != nil {
			return fmt.Errorf("udp sender %d: %w", s, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			// The senders end with ctx; a send error is a dropped datagram.
			_ = udpSend(ctx, conn, keyed, seqs, s, o.senders, float64(rate)/float64(o.senders), sent)
		}()
	}
	return nil
}

// udpStep sends at rate for warmup+hold and measures over the hold.
func (b *bench) udpStep(ctx context.Context, target *nodeProc, keyed []udpKeyed, seqs []uint64, rate int) (*result, error) {
	o := b.o.udp
	b.logf("udp: %d datagrams/s to %s for %v", rate, target.id, o.warmup+o.hold)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var sent atomic.Int64
	var wg sync.WaitGroup
	if err := b.udpStartSenders(sctx, &wg, target, keyed, seqs, rate, &sent); err != nil {
		stop()
		wg.Wait()
		return nil, err
	}
	select {
	case <-time.After(o.warmup):
	case <-ctx.Done():
	}
	before, err := udpCounters(ctx, target.httpAddr)
	if err != nil {
		return nil, err
	}
	sent0, t0 := sent.Load(), time.Now()
	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
	}
	after, err := udpCounters(ctx, target.httpAddr)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(t0).Seconds()
	sentN := sent.Load() - sent0
	stop()
	wg.Wait()
	r := &result{Workload: "udp", Case: fmt.Sprintf("%d/s to the %s", rate, b.o.udp.target),
		Params: map[string]any{"offered_per_s": rate, "instances": len(keyed), "senders": o.senders, "target": o.target, "hold_s": o.hold.Seconds()}}
	r.add("sent_per_s", round1(float64(sentN)/elapsed))
	r.add("accepted_per_s", round1((after["accepted"]-before["accepted"])/elapsed))
	for k, v := range after {
		if k != "accepted" && v-before[k] > 0 {
			r.add("rejected_"+k+"_per_s", round1((v-before[k])/elapsed))
		}
	}
	return r, nil
}

// udpSend sends the beats of the instances i ≡ s (mod n) round robin at
// rate datagrams a second until ctx ends, each with the next sequence
// number of its instance.
func udpSend(ctx context.Context, conn *net.UDPConn, keyed []udpKeyed, seqs []uint64, s, n int, rate float64, sent *atomic.Int64) error {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 0, udpbeat.MaxDatagramSize)
	i, done := s, 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		due := int(rate*time.Since(start).Seconds()) - done
		for range due {
			seqs[i]++
			buf = udpbeat.Append(buf[:0], udpbeat.Beat{Service: "udp-bench", ID: keyed[i].id, Incarnation: 1, Seq: seqs[i]}, keyed[i].key)
			if _, err := conn.Write(buf); err != nil {
				// A full socket buffer (ENOBUFS) drops the datagram, as the
				// network would.
				continue
			}
			sent.Add(1)
			if i += n; i >= len(keyed) {
				i = s
			}
		}
		done += max(due, 0)
	}
}

// udpCounters reads a node's UDP beat counters: "accepted" and each
// rejection reason.
func udpCounters(ctx context.Context, httpAddr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const rej = `registry_udp_beats_rejected_total{reason="`
	for sc.Scan() {
		line := sc.Text()
		var name string
		switch {
		case strings.HasPrefix(line, "registry_udp_beats_accepted_total "):
			name = "accepted"
		case strings.HasPrefix(line, rej):
			name, _, _ = strings.Cut(line[len(rej):], `"`)
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s/metrics: %q: %w", httpAddr, line, err)
		}
		out[name] = v
	}
	return out, sc.Err()
}
