// Command caller is an example client of a registered service: it reaches
// the service through the registry's gRPC resolver and prints which
// instance answered each call.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/regcenter/registry/client"
)

func main() {
	registry := flag.String("registry", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "registry gRPC endpoints, comma-separated")
	service := flag.String("service", "orders", "service to call")
	every := flag.Duration("every", 500*time.Millisecond, "time between calls")
	count := flag.Int("count", 0, "calls to make (0: until interrupted)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.New(client.Config{Endpoints: strings.Split(*registry, ",")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	conn, err := grpc.NewClient("registry:///"+*service,
		grpc.WithResolvers(c.Resolver()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin":{}}]}`))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for i := 0; *count == 0 || i < *count; i++ {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fmt.Println("call failed:", err)
		} else {
			fmt.Printf("call %d answered by %s: %s\n", i+1, p.Addr, resp.Status)
		}
		select {
		case <-time.After(*every):
		case <-ctx.Done():
			return
		}
	}
}
