// Command registry-bench measures a registry: it starts a local cluster of
// three registry-node processes (or uses --endpoints), drives it with the
// Go client and prints one JSON line per result and a table at the end.
// The workloads are defined in docs/benchmarks.md. Every run is bounded in
// time; every process it starts is killed when it ends, also on SIGINT,
// SIGTERM or an error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/proc"
)

type options struct {
	endpoints  string
	nodeBinary string
	ip         string
	portBase   int
	workloads  string
	guardShare float64
	profileDir string
	plotsDir   string
	nodeFlags  string
	backoffMax time.Duration
	secure     bool
	cpuProfile string

	w2Workers  int
	w2Duration time.Duration
	w2TTL      time.Duration

	w3Instances, w3Stopped int
	w3TTL, w3Interval      time.Duration
	w3Settle, w3Wait       time.Duration

	w4Instances, w4Clients int
	w4TTL, w4Interval      time.Duration
	w4WriteEvery           time.Duration
	w4Observe              time.Duration
	w4x                    w4Options // restarts and the etcd comparison (w4.go)

	w1Steps     string
	w1Clients   int
	w1Hold      time.Duration
	w1TTL       time.Duration
	w1Interval  time.Duration
	w1MaxP99    time.Duration
	w1Modes     string
	w1Profile   string
	regWorkers  int
	stepTimeout time.Duration

	dns dnsOptions
	udp udpOptions
	w5  w5Options

	scale scaleOptions
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("registry-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.endpoints, "endpoints", "", "gRPC addresses of a running cluster (comma-separated); default: start three nodes locally. W4 and the node CPU/RSS figures need local nodes")
	fs.StringVar(&o.nodeBinary, "node-binary", "", "registry-node binary to start (default: go build ./cmd/registry-node into a temporary directory)")
	fs.StringVar(&o.ip, "ip", "127.0.0.211", "loopback IP the local nodes listen on")
	fs.IntVar(&o.portBase, "port-base", 27000, "local nodes use gRPC base+1..3, Raft base+101..103, HTTP base+201..203, DNS base+301..303, UDP beats base+321..323")
	fs.StringVar(&o.workloads, "workloads", "w2,w3,w4,w1", "workloads to run, in this order (w1, w2, w3, w4, w5, dns, udp, udp-w1, scale: the million-instance run, its own make target)")
	fs.StringVar(&o.nodeFlags, "node-flags", "", "extra flags for the local nodes, space-separated (e.g. \"--raft-heartbeat-timeout 300ms\"), to try settings")
	fs.DurationVar(&o.backoffMax, "client-backoff-max", 0, "BackoffMax of the benchmark's Go clients (0: the client's default), to try settings")
	fs.BoolVar(&o.secure, "secure", false, "start the local nodes with mutual TLS on every port and ACLs on (a CA and certificates made in a temporary directory, the ACLs bootstrapped with a management token that every benchmark connection carries), to compare with a plaintext run")
	fs.Float64Var(&o.guardShare, "expiry-guard-share", 0.6, "--expiry-guard-share of the local nodes (W3 stops half of its instances; the default guard, 0.3, would hold their expiry)")

	fs.IntVar(&o.w2Workers, "w2-workers", 64, "W2: concurrent workers")
	fs.DurationVar(&o.w2Duration, "w2-duration", 20*time.Second, "W2: how long the workers register")
	fs.DurationVar(&o.w2TTL, "w2-ttl", 30*time.Second, "W2: TTL of the registered instances")

	fs.IntVar(&o.w3Instances, "w3-instances", 200, "W3: instances")
	fs.IntVar(&o.w3Stopped, "w3-stopped", 100, "W3: instances that stop beating at t0")
	fs.DurationVar(&o.w3TTL, "w3-ttl", 3*time.Second, "W3: TTL")
	fs.DurationVar(&o.w3Interval, "w3-interval", time.Second, "W3: beat interval")
	fs.DurationVar(&o.w3Settle, "w3-settle", 3*time.Second, "W3: beating before t0")
	fs.DurationVar(&o.w3Wait, "w3-wait", 15*time.Second, "W3: how long after t0+TTL to wait for the removals (and watch for false ones)")

	fs.IntVar(&o.w4Instances, "w4-instances", 2000, "W4: instances")
	fs.IntVar(&o.w4Clients, "w4-clients", 8, "W4: clients the instances are spread over")
	fs.DurationVar(&o.w4TTL, "w4-ttl", 5*time.Second, "W4: TTL")
	fs.DurationVar(&o.w4Interval, "w4-interval", time.Second, "W4: beat interval")
	fs.DurationVar(&o.w4WriteEvery, "w4-write-every", 10*time.Millisecond, "W4: period of the write loop")
	fs.DurationVar(&o.w4Observe, "w4-observe", 15*time.Second, "W4: how long after the kill to watch for false expirations")
	o.w4x.register(fs)

	fs.StringVar(&o.w1Steps, "w1-steps", "1000,5000,10000,20000,50000,75000,100000", "W1: instance counts to step through")
	fs.IntVar(&o.w1Clients, "w1-clients", 8, "W1: clients (connections) the instances are spread over")
	fs.DurationVar(&o.w1Hold, "w1-hold", 15*time.Second, "W1: how long each step is measured")
	fs.DurationVar(&o.w1TTL, "w1-ttl", 5*time.Second, "W1: TTL")
	fs.DurationVar(&o.w1Interval, "w1-interval", time.Second, "W1: beat interval")
	fs.DurationVar(&o.w1MaxP99, "w1-max-p99", 100*time.Millisecond, "W1: a step fails when the beat latency p99 exceeds this")
	fs.StringVar(&o.w1Modes, "w1-modes", "batched,single", "W1: batched (the Go client, default MaxBeatsPerFrame), single (the Go client, one beat per frame) and/or raw (the scale workload's generator: frames of 1000 beats built once, one stream per client; far cheaper for the bench than the client)")
	fs.StringVar(&o.profileDir, "profile", "", "directory: start the local nodes with --enable-pprof and save a CPU profile (most of the hold) and a heap profile (at its end) of the leader during W1 steps (see --w1-profile-steps)")
	fs.StringVar(&o.w1Profile, "w1-profile-steps", "", "W1 with --profile: the instance counts whose steps are profiled (default: every step run, so the largest one run is among them)")
	fs.StringVar(&o.plotsDir, "plots", "", "directory: after the run, write SVG plots of the workloads that ran (w1-p99.svg: W1 beat p99 against instances per mode; w2-latency.svg: W2 latency CDF; w5-delivery.svg: W5 delivery time CDF per watcher count; scale-beats.svg: the scale workload's beat latency CDF)")
	fs.StringVar(&o.cpuProfile, "bench-cpuprofile", "", "file: write a CPU profile of registry-bench itself (the load generator, not the nodes) over the whole run; read it with go tool pprof -top FILE")
	fs.IntVar(&o.regWorkers, "register-workers", 64, "W1, W4: concurrent registrations while setting up")
	udpFlags(fs, &o.udp)
	fs.DurationVar(&o.stepTimeout, "setup-timeout", 90*time.Second, "bound on registering the instances of one W1 step or of W4")
	dnsFlags(fs, &o.dns)
	w5Flags(fs, &o.w5)
	scaleFlags(fs, &o.scale)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "registry-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	if o.profileDir != "" {
		if o.endpoints != "" {
			fmt.Fprintln(stderr, "registry-bench: --profile needs the local nodes (no --endpoints): it starts them with --enable-pprof")
			return 2
		}
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "registry-bench: --profile: %v\n", err)
			return 2
		}
	}

	clientBackoffMax = o.backoffMax
	if o.secure {
		if o.endpoints != "" {
			fmt.Fprintln(stderr, "registry-bench: --secure needs the local nodes (no --endpoints): it makes their certificates and bootstraps their ACLs")
			return 2
		}
		s, err := newSecurity(o.ip)
		if err != nil {
			fmt.Fprintf(stderr, "registry-bench: --secure: %v\n", err)
			return 1
		}
		defer s.close()
		sec = s
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "registry-bench: --bench-cpuprofile: %v\n", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			fmt.Fprintf(stderr, "registry-bench: --bench-cpuprofile: %v\n", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, rep: &reporter{out: stdout}, log: stderr}
	err := b.run(ctx)
	b.rep.table()
	if o.plotsDir != "" {
		paths, perr := writePlots(o.plotsDir, b.rep.results)
		for _, p := range paths {
			b.logf("wrote %s", p)
		}
		if perr != nil {
			fmt.Fprintf(stderr, "registry-bench: --plots: %v\n", perr)
			if err == nil {
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "registry-bench: %v\n", err)
		return 1
	}
	return 0
}

// bench runs the workloads.
type bench struct {
	o   options
	rep *reporter
	log io.Writer
	bin string
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context) error {
	if b.o.endpoints == "" {
		bin := b.o.nodeBinary
		if bin == "" {
			b.logf("building registry-node")
			dir, path, err := proc.Build(ctx, "github.com/regcenter/registry/cmd/registry-node", "registry-node")
			if dir != "" {
				defer os.RemoveAll(dir)
			}
			if err != nil {
				return fmt.Errorf("building registry-node: %w", err)
			}
			bin = path
		}
		b.bin = bin
	}
	workloads := map[string]func(context.Context) error{"w1": b.w1, "w2": b.w2, "w3": b.w3, "w4": b.w4, "w5": b.w5, "dns": b.wdns, "udp": b.udp, "udp-w1": b.udpW1, "scale": b.scale}
	for _, w := range splitList(b.o.workloads) {
		fn, ok := workloads[strings.ToLower(w)]
		if !ok {
			return fmt.Errorf("--workloads: unknown workload %q (want w1, w2, w3, w4, w5, dns, udp, udp-w1, scale)", w)
		}
		if err := fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// cluster returns a fresh local cluster, or the --endpoints one. The
// caller closes it. The local nodes get the workload's flags more before
// --node-flags, which can override them.
func (b *bench) cluster(ctx context.Context, more ...string) (*cluster, error) {
	if b.o.endpoints != "" {
		return externalCluster(splitList(b.o.endpoints)), nil
	}
	extra := []string{"--expiry-guard-share", strconv.FormatFloat(b.o.guardShare, 'g', -1, 64)}
	if sec != nil {
		b.logf("starting three nodes on %s with mutual TLS and ACLs", b.o.ip)
		extra = append(extra, sec.nodeFlags...)
	} else {
		b.logf("starting three nodes on %s", b.o.ip)
	}
	if b.o.profileDir != "" {
		extra = append(extra, "--enable-pprof")
	}
	extra = append(extra, more...)
	extra = append(extra, strings.Fields(b.o.nodeFlags)...)
	return startCluster(ctx, b.bin, b.o.ip, b.o.portBase, extra)
}

// clientLog counts what the client logs at Info and above: the client logs
// only trouble there (a beat stream broke, an instance was re-registered,
// a registration event was dropped).
type clientLog struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
	byMsg map[string]int
}

func (l *clientLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }
func (l *clientLog) Handle(_ context.Context, r slog.Record) error {
	l.n.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byMsg == nil {
		l.byMsg = map[string]int{}
	}
	l.byMsg[r.Message]++
	if len(l.first) < 5 {
		var sb strings.Builder
		sb.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
			return true
		})
		l.first = append(l.first, sb.String())
	}
	return nil
}
func (l *clientLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *clientLog) WithGroup(string) slog.Handler      { return l }

func (l *clientLog) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.first)
}

// count returns how many records had msg as their message.
func (l *clientLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byMsg[msg]
}

// clientBackoffMax is --client-backoff-max, for every client the
// workloads make (0: the client's default).
var clientBackoffMax time.Duration

// clientConfig is the client configuration of the workloads.
func clientConfig(c client.Config) client.Config {
	if clientBackoffMax > 0 {
		c.BackoffMax = clientBackoffMax
	}
	if sec != nil {
		c.TLS, c.Token = sec.tls.Clone(), string(sec.secret)
	}
	return c
}
