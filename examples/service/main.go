// Command service is an example service: it serves gRPC on --addr and keeps
// itself registered in the registry until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/regcenter/registry/client"
)

func main() {
	registry := flag.String("registry", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "registry gRPC endpoints, comma-separated")
	service := flag.String("service", "orders", "service name to register under")
	id := flag.String("id", "", "instance id (default: service-<port>)")
	addr := flag.String("addr", "127.0.0.1:0", "address to serve gRPC on")
	flag.Parse()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.GracefulStop()

	if *id == "" {
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		*id = *service + "-" + port
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := client.New(client.Config{Endpoints: strings.Split(*registry, ",")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // deregisters
	reg, err := c.Register(ctx, client.Instance{Service: *service, ID: *id, Address: lis.Addr().String(),
		Metadata: map[string]string{"version": "1"}},
		client.WithBeatInterval(time.Second), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s/%s serving on %s; Ctrl-C to stop\n", *service, *id, lis.Addr())
	for {
		select {
		case ev := <-reg.Events():
			fmt.Printf("registration: %s (incarnation %d) %s\n", ev.Type, ev.Incarnation, ev.Reason)
		case <-ctx.Done():
			fmt.Println("deregistering")
			return
		}
	}
}
