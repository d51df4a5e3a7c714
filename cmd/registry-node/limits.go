package main

import (
	"flag"
	"strings"
	"time"

	"github.com/regcenter/registry/node"
)

// limitFlags defines the flags of node.Limits on fs, with d's defaults.
func limitFlags(fs *flag.FlagSet, l *node.Limits, origins, hosts *string, d node.Limits) {
	*l = d // each flag's default is the value it starts with
	for _, f := range []struct {
		p           any
		name, usage string
	}{
		{&l.MaxConnections, "max-connections", "open connections per client listener (gRPC and HTTP each); beyond it a new connection waits until one closes"},
		{&l.GRPCMaxConcurrentStreams, "grpc-max-concurrent-streams", "concurrent calls (streams) per gRPC connection"},
		{&l.GRPCMaxConnectionIdle, "grpc-max-connection-idle", "close a gRPC connection without a call for this long"},
		{&l.GRPCConnectionTimeout, "grpc-connection-timeout", "close a new gRPC connection that has not completed its handshake in this long"},
		{&l.GRPCKeepaliveMinTime, "grpc-keepalive-min-time", "a gRPC client that sends keepalive pings more often is disconnected"},
		{&l.HTTPReadHeaderTimeout, "http-read-header-timeout", "time to read an HTTP request's header"},
		{&l.HTTPReadTimeout, "http-read-timeout", "time to read a whole HTTP request, body included (a slow body is cut)"},
		{&l.HTTPWriteTimeout, "http-write-timeout", "time to write an HTTP response; watches are exempt"},
		{&l.HTTPIdleTimeout, "http-idle-timeout", "close an idle HTTP keep-alive connection after this long"},
		{&l.HTTPMaxHeaderBytes, "http-max-header-bytes", "largest HTTP request header"},
		{&l.WriteRate, "write-rate", "writes per second per client: per ACL token (accessor id) with --acl-enabled, per client address (IPv6: /64) without (Register, Deregister, a Beat call or a BeatStream frame each count one)"},
		{&l.WriteBurst, "write-burst", "writes one client (ACL token, or address without ACLs) may make at once above --write-rate"},
		{&l.MaxWatchesPerClient, "max-watches-per-client", "concurrent watches on this node per client: per ACL token with --acl-enabled, per client address without"},
	} {
		usage := f.usage + " (env " + envName(f.name) + ")"
		switch p := f.p.(type) {
		case *int:
			fs.IntVar(p, f.name, *p, usage)
		case *float64:
			fs.Float64Var(p, f.name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, f.name, *p, usage)
		}
	}
	env := func(name string) string { return " (env " + envName(name) + ")" }
	fs.StringVar(origins, "http-allowed-origins", "", "comma-separated browser origins (scheme://host:port) allowed to write through the HTTP API; \"*\" any (default: this node's HTTP addresses and localhost)"+env("http-allowed-origins"))
	fs.StringVar(hosts, "http-allowed-hosts", "", "comma-separated host names the HTTP API answers under /v1/ (IP addresses always); \"*\" any (default: this node's HTTP address names and localhost)"+env("http-allowed-hosts"))
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
