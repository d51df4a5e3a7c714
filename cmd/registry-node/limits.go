package main

import (
	"flag"
	"strings"

	"github.com/regcenter/registry/node"
)

// limitFlags defines the flags of node.Limits on fs, with d's defaults.
func limitFlags(fs *flag.FlagSet, l *node.Limits, origins, hosts *string, d node.Limits) {
	env := func(name string) string { return " (env " + envName(name) + ")" }
	fs.IntVar(&l.MaxConnections, "max-connections", d.MaxConnections, "open connections per client listener (gRPC and HTTP each); beyond it a new connection waits until one closes"+env("max-connections"))
	fs.IntVar(&l.GRPCMaxConcurrentStreams, "grpc-max-concurrent-streams", d.GRPCMaxConcurrentStreams, "concurrent calls (streams) per gRPC connection"+env("grpc-max-concurrent-streams"))
	fs.DurationVar(&l.GRPCMaxConnectionIdle, "grpc-max-connection-idle", d.GRPCMaxConnectionIdle, "close a gRPC connection without a call for this long"+env("grpc-max-connection-idle"))
	fs.DurationVar(&l.GRPCKeepaliveMinTime, "grpc-keepalive-min-time", d.GRPCKeepaliveMinTime, "a gRPC client that sends keepalive pings more often is disconnected"+env("grpc-keepalive-min-time"))
	fs.DurationVar(&l.HTTPReadHeaderTimeout, "http-read-header-timeout", d.HTTPReadHeaderTimeout, "time to read an HTTP request's header"+env("http-read-header-timeout"))
	fs.DurationVar(&l.HTTPReadTimeout, "http-read-timeout", d.HTTPReadTimeout, "time to read a whole HTTP request, body included (a slow body is cut)"+env("http-read-timeout"))
	fs.DurationVar(&l.HTTPWriteTimeout, "http-write-timeout", d.HTTPWriteTimeout, "time to write an HTTP response; watches are exempt"+env("http-write-timeout"))
	fs.DurationVar(&l.HTTPIdleTimeout, "http-idle-timeout", d.HTTPIdleTimeout, "close an idle HTTP keep-alive connection after this long"+env("http-idle-timeout"))
	fs.IntVar(&l.HTTPMaxHeaderBytes, "http-max-header-bytes", d.HTTPMaxHeaderBytes, "largest HTTP request header"+env("http-max-header-bytes"))
	fs.Float64Var(&l.WriteRate, "write-rate", d.WriteRate, "writes per second per client address (Register, Deregister, a Beat call or a BeatStream frame each count one)"+env("write-rate"))
	fs.IntVar(&l.WriteBurst, "write-burst", d.WriteBurst, "writes one client address may make at once above --write-rate"+env("write-burst"))
	fs.IntVar(&l.MaxWatchesPerClient, "max-watches-per-client", d.MaxWatchesPerClient, "concurrent watches per client address"+env("max-watches-per-client"))
	fs.StringVar(origins, "http-allowed-origins", "", "comma-separated browser origins (scheme://host:port) allowed to write through the HTTP API; \"*\" any (default: this node's HTTP addresses and localhost)"+env("http-allowed-origins"))
	fs.StringVar(hosts, "http-allowed-hosts", "", "comma-separated Host headers (host or host:port) the HTTP API answers; \"*\" any (default: this node's HTTP addresses and localhost)"+env("http-allowed-hosts"))
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
