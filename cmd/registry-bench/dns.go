package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// dnsOptions are the DNS workload's flags.
type dnsOptions struct {
	instances int
	workers   int
	duration  time.Duration
	bufsize   int
	target    string
}

func dnsFlags(fs *flag.FlagSet, o *dnsOptions) {
	fs.IntVar(&o.instances, "dns-instances", 300, "DNS: instances of the one service queried")
	fs.IntVar(&o.workers, "dns-workers", 32, "DNS: concurrent clients, each with one UDP query outstanding")
	fs.DurationVar(&o.duration, "dns-duration", 10*time.Second, "DNS: how long the clients query")
	fs.IntVar(&o.bufsize, "dns-bufsize", 1232, "DNS: the EDNS0 buffer size of the queries (dig's default)")
	fs.StringVar(&o.target, "dns-target", "", "DNS: the node's DNS address (host:port) with --endpoints; default: the first local node's")
}

// wdns measures DNS: it registers --dns-instances instances of one service
// (distinct addresses, no beats, a TTL that outlasts the run), waits until
// the first node's DNS answers all of them over TCP, then --dns-workers
// clients query that node over UDP for --dns-duration, half A and half SRV
// (EDNS0 buffer --dns-bufsize: the replies are truncated to it, TC set, as
// a stub resolver gets them before it retries over TCP).
func (b *bench) wdns(ctx context.Context) error {
	o := b.o.dns
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	target := o.target
	if target == "" {
		if c.nodes == nil {
			return errors.New("--dns-target is required with --endpoints")
		}
		target = hostPort(b.o.ip, b.o.portBase+dnsOffset)
	}
	cc, err := grpc.NewClient(c.endpoints[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	service := fmt.Sprintf("dns-bench-%x", time.Now().UnixNano()&0xffffff)
	b.logf("DNS: registering %d instances of %s", o.instances, service)
	if err := registerDNSInstances(ctx, registryv1.NewRegistryClient(cc), service, o.instances, o.duration+5*time.Minute); err != nil {
		return err
	}
	name := service + ".service.registry."
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = poll.Until(wctx, func(context.Context) error {
		r, err := query(&dns.Client{Net: "tcp", Timeout: 5 * time.Second}, nil, target, name, dns.TypeSRV, 0)
		if err != nil {
			return err
		}
		if len(r.Answer) != o.instances {
			return fmt.Errorf("%s answers %d of %d SRV records", target, len(r.Answer), o.instances)
		}
		return nil
	})
	cancel()
	if err != nil {
		return err
	}

	b.logf("DNS: %d clients querying %s for %v", o.workers, target, o.duration)
	qctx, qcancel := context.WithTimeout(ctx, o.duration)
	defer qcancel()
	var (
		mu        sync.Mutex
		lats      []time.Duration
		errs, tcs int
		lastErr   error
		wg        sync.WaitGroup
	)
	start := time.Now()
	for w := range o.workers {
		wg.Go(func() {
			cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second, UDPSize: uint16(o.bufsize)}
			conn, err := cl.DialContext(qctx, target)
			if err != nil {
				mu.Lock()
				errs, lastErr = errs+1, err
				mu.Unlock()
				return
			}
			defer conn.Close()
			var mine []time.Duration
			var myErrs, myTC int
			var myErr error
			for n := w; qctx.Err() == nil; n++ {
				qtype := dns.TypeA
				if n%2 == 1 {
					qtype = dns.TypeSRV
				}
				t := time.Now()
				r, err := query(cl, conn, target, name, qtype, o.bufsize)
				switch {
				case err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0:
					mine = append(mine, time.Since(t))
					if r.Truncated {
						myTC++
					}
				case qctx.Err() == nil:
					if err == nil {
						err = fmt.Errorf("%s %s: %s with %d answers", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], len(r.Answer))
					}
					myErrs, myErr = myErrs+1, err
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			tcs += myTC
			if myErr != nil {
				lastErr = myErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r := &result{Workload: "DNS", Case: fmt.Sprintf("%d instances, %d clients", o.instances, o.workers), Params: map[string]any{
		"instances": o.instances, "workers": o.workers, "duration_s": o.duration.Seconds(), "bufsize": o.bufsize,
		"queries": "A and SRV alternately over UDP, against one node", "target": target,
	}}
	r.add("queries", len(lats))
	r.add("queries_per_s", round1(float64(len(lats))/elapsed.Seconds()))
	r.addDist("latency", lats)
	r.add("truncated", tcs)
	r.add("errors", errs)
	if lastErr != nil {
		r.add("last_error", lastErr.Error())
	}
	b.rep.emit(r)
	return nil
}

// registerDNSInstances registers n instances of service at distinct
// loopback addresses, 32 at a time.
func registerDNSInstances(ctx context.Context, stub registryv1.RegistryClient, service string, n int, ttl time.Duration) error {
	var wg sync.WaitGroup
	errc := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := stub.Register(cctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
				Service: service, Id: fmt.Sprintf("i%05d", i),
				Address:      net.JoinHostPort(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1), fmt.Sprint(10000+i%50000)),
				Incarnation:  1,
				BeatInterval: durationpb.New(ttl / 4), SuspectAfter: durationpb.New(ttl / 2), Ttl: durationpb.New(ttl),
			}})
			if err != nil {
				errc <- fmt.Errorf("registering %s/i%05d: %w", service, i, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc // nil when closed empty
}

// query sends one question, over conn if it is not nil.
func query(cl *dns.Client, conn *dns.Conn, addr, name string, qtype uint16, bufsize int) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if bufsize > 0 {
		m.SetEdns0(uint16(bufsize), false)
	}
	if conn != nil {
		r, _, err := cl.ExchangeWithConn(m, conn)
		return r, err
	}
	r, _, err := cl.Exchange(m, addr)
	return r, err
}
