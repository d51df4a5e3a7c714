package consulapi_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

func TestConsulAPIServesTLSWhenTheNodeDoes(t *testing.T) {
	ca := tlstest.CA(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.InMemory = "n1", true
	cfg.RaftListener = lis
	cfg.RaftAddr, cfg.RaftAdvertise = lis.Addr().String(), lis.Addr().String()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.ConsulAddr = "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.BootstrapPeers = []node.Peer{{ID: "n1", Address: lis.Addr().String()}}
	cfg.Raft = nodetest.FastRaft
	cfg.Logger = nodetest.Logger(t, "n1")
	cfg.TLS = tlstest.WriteFiles(t, t.TempDir(), ca, tlstest.Cert(t, ca, true))
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Shutdown(context.Background()) })

	tlsClient, err := consul.NewClient(&consul.Config{Address: nd.ConsulAddr(), Scheme: "https",
		HttpClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlstest.ClientConfig(t, ca, tlstest.Cert(t, ca, false))}}})
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		return tlsClient.Agent().ServiceRegister(ttlRegistration("web", "web-1", 8081, "10s", ""))
	})
	if e, _, err := tlsClient.Health().Service("web", "", true, nil); err != nil || len(e) != 1 {
		t.Errorf("Health().Service over TLS: %v, %v", healthIDs(e), err)
	}
	plain := consulClient(t, nd, "")
	if _, err := plain.Status().Leader(); err == nil {
		t.Error("Status().Leader() over plain HTTP to a TLS node succeeded")
	}
}
