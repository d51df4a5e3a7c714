package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/regcenter/registry/tlsutil"
)

// health implements "registry-node health": it asks a node's /readyz (or
// any URL) and exits 0 on 200 and 1 otherwise, printing why. It needs no
// shell, so it serves as a container healthcheck:
//
//	HEALTHCHECK CMD ["/registry-node", "health"]
func health(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("registry-node health", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	httpAddr := fs.String("http-addr", envOr(envName("http-addr"), "127.0.0.1:7201"),
		"the node's HTTP address, as given to the node (env "+envName("http-addr")+"); an unspecified host means 127.0.0.1")
	url := fs.String("url", "", "the URL to ask instead of http://<http-addr>/readyz (e.g. .../healthz: the process serves)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	var tlsFiles [3]string // ca, cert, key
	for i, name := range []string{"tls-ca", "tls-cert", "tls-key"} {
		fs.StringVar(&tlsFiles[i], name, os.Getenv(envName(name)), "as given to the node (env "+envName(name)+"); with --tls-ca, https with the node's certificate as the client's")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "Usage: registry-node health [flags]\n\n"+
				"Asks a node whether it is ready: a leader is known and the node has applied what\n"+
				"was committed when it started (/readyz). Exits 0 if so, 1 if not or unreachable.\n\nFlags:\n")
			fs.PrintDefaults()
			return exitOK
		}
		fmt.Fprintf(stderr, "registry-node health: %v (see registry-node health --help)\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "registry-node health: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	target := *url
	if target == "" {
		host, port, err := net.SplitHostPort(*httpAddr)
		if err != nil {
			fmt.Fprintf(stderr, "registry-node health: --http-addr %q: %v\n", *httpAddr, err)
			return exitUsage
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		target = "http://" + net.JoinHostPort(host, port) + "/readyz"
		if tlsFiles[0] != "" {
			target = "https://" + strings.TrimPrefix(target, "http://")
		}
	}
	client := &http.Client{}
	if tlsFiles[0] != "" {
		cfg, err := tlsutil.ClientConfig(tlsFiles[0], tlsFiles[1], tlsFiles[2])
		if err != nil {
			fmt.Fprintf(stderr, "registry-node health: %v\n", err)
			return exitUsage
		}
		client.Transport = &http.Transport{TLSClientConfig: cfg}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "registry-node health: %v\n", err)
		return exitUsage
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "registry-node health: %s: %v\n", target, err)
		return exitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "registry-node health: %s: %s: %s\n", target, resp.Status, strings.TrimSpace(string(body)))
		return exitFailure
	}
	return exitOK
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
