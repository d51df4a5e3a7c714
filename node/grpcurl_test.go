package node_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

// grpcurl, a client no one here wrote, against a node with TLS and ACLs on:
// plaintext is refused, a certificate without a token is UNAUTHENTICATED,
// and a certificate with a token is answered. The node denies gRPC
// reflection under ACLs, so grpcurl reads the API from proto/.
func TestGrpcurlNeedsTheCertificateAndAToken(t *testing.T) {
	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Skip("grpcurl is not on PATH (.ci/run installs it: go install github.com/fullstorydev/grpcurl/cmd/grpcurl)")
	}
	ca := tlstest.CA(t)
	nodeDir, clientDir := t.TempDir(), t.TempDir()
	nd := nodetest.Single(t, func(cfg *node.Config) {
		cfg.TLS = tlstest.WriteFiles(t, nodeDir, ca, tlstest.Cert(t, ca, true))
		cfg.ACLEnabled = true
	})
	client := tlstest.Cert(t, ca, false)
	files := tlstest.WriteFiles(t, clientDir, ca, client)

	// The management token, from the one-time bootstrap (it needs none).
	cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tlstest.ClientConfig(t, ca, client))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	boot, err := registryv1.NewACLClient(cc).Bootstrap(t.Context(), &registryv1.ACLBootstrapRequest{})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		args = append([]string{"-max-time", "10", "-import-path", "../proto", "-proto", "registry/v1/registry.proto"}, args...)
		out, err := exec.CommandContext(ctx, grpcurl, args...).CombinedOutput()
		return string(out), err
	}
	call := []string{"-d", "{}", nd.GRPCAddr(), "registry.v1.Registry/ListServices"}
	tlsArgs := []string{"-cacert", files.CAFile, "-cert", files.CertFile, "-key", files.KeyFile, "-servername", tlsutil.ServerName}

	if out, err := run(append([]string{"-plaintext"}, call...)...); err == nil {
		t.Errorf("grpcurl -plaintext against a TLS node succeeded:\n%s", out)
	}
	if out, err := run(append([]string{"-cacert", files.CAFile, "-servername", tlsutil.ServerName}, call...)...); err == nil {
		t.Errorf("grpcurl without a client certificate succeeded:\n%s", out)
	}
	if out, err := run(append(tlsArgs, call...)...); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("grpcurl with a certificate but no token: %v\n%s\nwant Unauthenticated", err, out)
	}
	// A known token is answered; the node holds no service yet.
	out, err := run(append(append(tlsArgs, "-H", "authorization: Bearer "+boot.SecretId), call...)...)
	if err != nil {
		t.Fatalf("grpcurl with a certificate and a token: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) == "" || strings.Contains(out, "ERROR") {
		t.Errorf("grpcurl with a certificate and a token answered:\n%s", out)
	}
}
