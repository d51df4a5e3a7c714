// Command fakenode stands in for registry-node in the harness's own tests: it
// takes the same flags, serves Cluster.Status (n1 is the leader of term 1)
// and server reflection on --grpc-addr, and exits 0 on SIGTERM or SIGINT.
// With --fake-ignore-sigterm it ignores SIGTERM; with --fake-exit-code it
// exits at once with that status.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

type cluster struct {
	registryv1.UnimplementedClusterServer
	id string
}

func (c cluster) Status(context.Context, *registryv1.StatusRequest) (*registryv1.StatusResponse, error) {
	role := "follower"
	if c.id == "n1" {
		role = "leader"
	}
	// The harness only checks that the leader's address is known.
	return &registryv1.StatusResponse{NodeId: c.id, Role: role, Term: 1, LeaderId: "n1", LeaderGrpcAddress: "n1.invalid:1"}, nil
}

func main() {
	id := flag.String("node-id", "", "node id")
	grpcAddr := flag.String("grpc-addr", "", "gRPC address")
	ignoreTerm := flag.Bool("fake-ignore-sigterm", false, "ignore SIGTERM")
	exitCode := flag.Int("fake-exit-code", -1, "exit at once with this status")
	for _, name := range []string{"data-dir", "raft-addr", "raft-advertise", "http-addr", "bootstrap-peers", "join", "log-level", "log-format"} {
		flag.String(name, "", "ignored")
	}
	flag.Parse()
	if *exitCode >= 0 {
		fmt.Fprintln(os.Stderr, "fakenode: exiting as asked")
		os.Exit(*exitCode)
	}
	l, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakenode:", err)
		os.Exit(2)
	}
	srv := grpc.NewServer()
	registryv1.RegisterClusterServer(srv, cluster{id: *id})
	reflection.Register(srv)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range signals {
			if sig == syscall.SIGTERM && *ignoreTerm {
				fmt.Fprintln(os.Stderr, "fakenode: ignoring SIGTERM")
				continue
			}
			srv.Stop()
			return
		}
	}()
	fmt.Fprintf(os.Stderr, "fakenode %s: serving on %s\n", *id, *grpcAddr)
	srv.Serve(l)
}
