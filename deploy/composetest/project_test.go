package composetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
)

// Environment variables.
const (
	envEnable  = "REGISTRY_COMPOSE_TEST"    // "1" runs the test
	envImage   = "REGISTRY_IMAGE"           // the image under test
	envCompose = "REGISTRY_COMPOSE_CMD"     // "docker compose" or "docker-compose"
	envProject = "REGISTRY_COMPOSE_PROJECT" // the compose project name
	envLogs    = "REGISTRY_COMPOSE_LOGS"    // a directory to save the nodes' logs in

	defaultImage = "regcenter/registry:dev"
)

// Bounds of the docker and compose commands.
const (
	upTimeout     = 2 * time.Minute
	stopTimeout   = 2 * time.Minute // three nodes in parallel, each within its stop_grace_period (30s)
	downTimeout   = 2 * time.Minute
	dockerTimeout = 30 * time.Second
)

// tlsFiles are the client's credentials for the compose cluster: the CA
// and the client certificate, and the ACL management token's secret, that
// make compose-secrets writes to deploy/secrets, which the compose file
// mounts into the nodes (the nodes bootstrap the ACLs with that token).
type tlsFiles struct {
	ca, cert, key string
	token         string // the secret, read from management-token
}

// secretsOrFail returns the files of deploy/secrets, failing the test if
// one is missing.
func secretsOrFail(t *testing.T) tlsFiles {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{
		ca:   filepath.Join(dir, "registry-agent-ca.pem"),
		cert: filepath.Join(dir, "client.pem"),
		key:  filepath.Join(dir, "client-key.pem"),
	}
	for _, file := range []string{f.ca, f.cert, f.key} {
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("the compose cluster's TLS files: %v (make compose-secrets creates them)", err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "management-token"))
	if err != nil {
		t.Fatalf("the compose cluster's management token: %v (make compose-secrets creates it)", err)
	}
	if f.token = strings.TrimSpace(string(b)); f.token == "" {
		t.Fatalf("%s is empty (delete it; make compose-secrets makes another)", filepath.Join(dir, "management-token"))
	}
	return f
}

// bearer sends an ACL token's secret on every call of a connection (only
// over TLS).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// config returns the client's TLS configuration: the CA and the client
// certificate, verifying that a node's certificate names server.registry.
func (f tlsFiles) config() (*tls.Config, error) { return tlsutil.ClientConfig(f.ca, f.cert, f.key) }

// project is one compose project running deploy/docker-compose.yml: the
// cluster under test.
type project struct {
	t       *testing.T // the test that started it: its cleanup and logs
	name    string
	tls     tlsFiles // what its clients use
	compose []string // the compose command, e.g. {"docker", "compose"}
	file    string   // the compose file, absolute
	env     []string // the environment of compose commands
	nodes   []*node
	markers uint64 // the marker's last incarnation, see barrier
}

// node is one service of the project, reached through its published ports.
type node struct {
	id      string // the Raft id, n1
	service string // the compose service and host name, node1
	grpc    string // the published gRPC endpoint, 127.0.0.1:port
	http    string // the published HTTP endpoint
	conn    *grpc.ClientConn
}

func (n *node) String() string { return n.id + "(" + n.service + ")" }

func (n *node) cluster() registryv1.ClusterClient   { return registryv1.NewClusterClient(n.conn) }
func (n *node) registry() registryv1.RegistryClient { return registryv1.NewRegistryClient(n.conn) }

// composeCommand returns the compose command to use: $REGISTRY_COMPOSE_CMD,
// else docker compose (v2) if it answers, else docker-compose (v1).
func composeCommand(ctx context.Context) ([]string, error) {
	if c := strings.Fields(os.Getenv(envCompose)); len(c) > 0 {
		return c, nil
	}
	for _, c := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		cctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		err := exec.CommandContext(cctx, c[0], append(c[1:], "version")...).Run()
		cancel()
		if err == nil {
			return c, nil
		}
	}
	return nil, errors.New("neither docker compose nor docker-compose answers")
}

// freePorts returns n TCP ports free on 127.0.0.1 now.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all are chosen, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startProject starts deploy/docker-compose.yml as a new project with image,
// on free ports, and registers a cleanup that removes everything it created
// (containers, network, volumes), printing the nodes' logs first if the
// test failed. It returns once the containers are created and started.
func startProject(t *testing.T, image string) *project {
	t.Helper()
	compose, err := composeCommand(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	file, err := filepath.Abs(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	name := os.Getenv(envProject)
	if name == "" {
		b := make([]byte, 4)
		rand.Read(b)
		name = "regtest-" + hex.EncodeToString(b)
	}
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	p := &project{t: t, name: name, compose: compose, file: file, tls: secretsOrFail(t)}
	tlsConfig, err := p.tls.config()
	if err != nil {
		t.Fatal(err)
	}
	p.env = append(os.Environ(), envImage+"="+image, "REGISTRY_BIND_IP=127.0.0.1")
	for i := range 3 {
		p.env = append(p.env,
			fmt.Sprintf("REGISTRY_GRPC_PORT_%d=%d", i+1, ports[i]),
			fmt.Sprintf("REGISTRY_HTTP_PORT_%d=%d", i+1, ports[3+i]))
		n := &node{
			id:      fmt.Sprintf("n%d", i+1),
			service: fmt.Sprintf("node%d", i+1),
			grpc:    net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])),
			http:    net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3+i])),
		}
		// Reconnect within a second once a node is back, rather than
		// after gRPC's default backoff (up to 2 minutes).
		n.conn, err = grpc.NewClient(n.grpc, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
			grpc.WithPerRPCCredentials(bearer(p.tls.token)),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
				BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
		if err != nil {
			t.Fatal(err)
		}
		p.nodes = append(p.nodes, n)
	}
	t.Logf("compose project %s with %q; gRPC %s %s %s", name, strings.Join(compose, " "), p.nodes[0].grpc, p.nodes[1].grpc, p.nodes[2].grpc)

	// Registered before anything is created: it runs last, also when the
	// test fails or panics.
	t.Cleanup(func() {
		for _, n := range p.nodes {
			n.conn.Close()
		}
		if t.Failed() {
			p.dumpLogs()
		}
		if dir := os.Getenv(envLogs); dir != "" {
			p.saveLogs(dir)
		}
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if out, err := p.run(ctx, "down", "-v", "--remove-orphans", "--timeout", "10"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		p.checkRemoved(ctx)
	})
	ctx, cancel := context.WithTimeout(t.Context(), upTimeout)
	defer cancel()
	if out, err := p.run(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	return p
}

// run runs a compose command of the project and returns its output.
func (p *project) run(ctx context.Context, args ...string) ([]byte, error) {
	full := append(append(p.compose[1:], "-p", p.name, "-f", p.file), args...)
	cmd := exec.CommandContext(ctx, p.compose[0], full...)
	cmd.Env = p.env
	return cmd.CombinedOutput()
}

// compose runs a compose command and fails the test if it fails.
func (p *project) composeOrFail(t *testing.T, timeout time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	out, err := p.run(ctx, args...)
	if err != nil {
		t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("compose %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

// docker runs the docker CLI and returns its trimmed output.
func docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// dockerOrFail runs the docker CLI and fails the test if it fails.
func (p *project) dockerOrFail(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// container returns the id of n's container, found by the labels both
// compose versions set (their container names differ).
func (p *project) container(ctx context.Context, n *node) (string, error) {
	out, err := docker(ctx, "ps", "-a", "-q", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "label=com.docker.compose.service="+n.service)
	if err != nil {
		return "", err
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		return "", fmt.Errorf("%d containers for service %s, want 1", len(ids), n.service)
	}
	return ids[0], nil
}

func (p *project) containerOrFail(t *testing.T, n *node) string {
	t.Helper()
	id, err := p.container(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// health returns the container's health status: starting, healthy or
// unhealthy (or its state if it is not running).
func (p *project) health(ctx context.Context, n *node) (string, error) {
	id, err := p.container(ctx, n)
	if err != nil {
		return "", err
	}
	out, err := docker(ctx, "inspect", "--format", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
	if err != nil {
		return "", err
	}
	state, health, _ := strings.Cut(out, " ")
	if state != "running" {
		return state, nil
	}
	return health, nil
}

// waitHealthy waits until Docker reports the nodes' containers healthy:
// their healthcheck (registry-node health, /readyz) passes.
func (p *project) waitHealthy(t *testing.T, timeout time.Duration, nodes ...*node) {
	t.Helper()
	poll.Eventually(t, timeout, func(ctx context.Context) error {
		for _, n := range nodes {
			h, err := p.health(ctx, n)
			if err != nil {
				return err
			}
			if h != "healthy" {
				return fmt.Errorf("%s is %s", n, h)
			}
		}
		return nil
	})
}

// status asks n for its Cluster.Status, within a second.
func status(ctx context.Context, n *node) (*registryv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := n.cluster().Status(ctx, &registryv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s: status: %w", n, err)
	}
	return st, nil
}

// waitLeader waits until every node in among reports the same leader,
// which is one of them and says it leads, and returns it.
func (p *project) waitLeader(t *testing.T, timeout time.Duration, among ...*node) *node {
	t.Helper()
	var leader *node
	poll.Eventually(t, timeout, func(ctx context.Context) error {
		id := ""
		for _, n := range among {
			st, err := status(ctx, n)
			if err != nil {
				return err
			}
			if st.LeaderId == "" {
				return fmt.Errorf("%s knows no leader", n)
			}
			if id != "" && st.LeaderId != id {
				return fmt.Errorf("%s names leader %s, another node %s", n, st.LeaderId, id)
			}
			id = st.LeaderId
		}
		for _, n := range among {
			if n.id == id {
				st, err := status(ctx, n)
				if err != nil {
					return err
				}
				if st.Role != "leader" {
					return fmt.Errorf("%s is named leader but is %s", n, st.Role)
				}
				leader = n
				return nil
			}
		}
		return fmt.Errorf("the leader %s is not among %v", id, among)
	})
	return leader
}

// waitCaughtUp waits until n has applied at least what the leader had
// applied when n first answered.
func (p *project) waitCaughtUp(t *testing.T, timeout time.Duration, n *node, among []*node) {
	t.Helper()
	var target uint64
	poll.Eventually(t, timeout, func(ctx context.Context) error {
		st, err := status(ctx, n)
		if err != nil {
			return err
		}
		if target == 0 {
			for _, m := range among {
				ls, err := status(ctx, m)
				if err != nil {
					return err
				}
				if ls.Role == "leader" {
					target = ls.AppliedIndex
				}
			}
			if target == 0 {
				return errors.New("no leader among the other nodes")
			}
		}
		if st.AppliedIndex < target {
			return fmt.Errorf("%s applied %d, the leader had applied %d", n, st.AppliedIndex, target)
		}
		return nil
	})
	t.Logf("%s caught up: applied index reached the leader's %d", n, target)
}

// network returns the name of the compose network n's container is on and
// its aliases there.
func (p *project) network(t *testing.T, n *node) (string, []string) {
	t.Helper()
	out := p.dockerOrFail(t, "inspect", "--format", "{{json .NetworkSettings.Networks}}", p.containerOrFail(t, n))
	var nets map[string]struct{ Aliases []string }
	if err := json.Unmarshal([]byte(out), &nets); err != nil {
		t.Fatalf("docker inspect networks: %v: %s", err, out)
	}
	if len(nets) != 1 {
		t.Fatalf("%s is on %d networks, want 1: %s", n, len(nets), out)
	}
	for name, v := range nets {
		return name, v.Aliases
	}
	panic("unreachable")
}

// dumpLogs prints the end of every node's log.
func (p *project) dumpLogs() {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	for _, n := range p.nodes {
		id, err := p.container(ctx, n)
		if err != nil {
			p.t.Logf("logs of %s: %v", n, err)
			continue
		}
		cmd := exec.CommandContext(ctx, "docker", "logs", "--tail", "60", id)
		out, _ := cmd.CombinedOutput()
		p.t.Logf("the last lines of %s's log:\n%s", n, out)
	}
}

// saveLogs writes every node's whole log to dir/<project>-<service>.log.
func (p *project) saveLogs(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Errorf("saving logs: %v", err)
		return
	}
	for _, n := range p.nodes {
		id, err := p.container(ctx, n)
		if err != nil {
			p.t.Errorf("saving logs of %s: %v", n, err)
			continue
		}
		out, _ := exec.CommandContext(ctx, "docker", "logs", "--timestamps", id).CombinedOutput()
		file := filepath.Join(dir, p.name+"-"+n.service+".log")
		if err := os.WriteFile(file, out, 0o644); err != nil {
			p.t.Errorf("saving logs of %s: %v", n, err)
			continue
		}
		p.t.Logf("%s's log: %s", n, file)
	}
}

// checkRemoved reports anything of the project left after down.
func (p *project) checkRemoved(ctx context.Context) {
	label := "label=com.docker.compose.project=" + p.name
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
	} {
		out, err := docker(ctx, what...)
		if err != nil {
			p.t.Errorf("checking the project is gone: %v", err)
			continue
		}
		if out != "" {
			p.t.Errorf("compose down left %s: %s", what[0], strings.Join(strings.Fields(out), " "))
		}
	}
}
