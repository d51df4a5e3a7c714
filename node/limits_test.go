package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// oneHTTPNode is a one-node cluster with HTTP on and limits adjusted.
func oneHTTPNode(t *testing.T, limits func(*node.Limits)) *node.Node {
	t.Helper()
	c := nodetest.New(t, 1, func(cfg *node.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		limits(&cfg.Limits)
	})
	c.Leader()
	return c.Nodes[0]
}

func TestASlowHTTPBodyIsCutWithinTheReadTimeout(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	nd := oneHTTPNode(t, func(l *node.Limits) { l.HTTPReadTimeout = readTimeout })
	conn := dialIdle(t, nd.HTTPAddr(), 1)[0]
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/services/s/instances/i HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", nd.HTTPAddr())
	// A byte every 50 ms: far slower than any real client, never idle
	// long enough for a per-read timeout to fire.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	closedWithin(t, conn, start, readTimeout)
}

func TestConnectionsBeyondTheLimitAreNotServedUntilOneCloses(t *testing.T) {
	const limit = 10
	nd := oneHTTPNode(t, func(l *node.Limits) { l.MaxConnections = limit })
	url := "http://" + nd.HTTPAddr() + "/healthz"
	held := dialIdle(t, nd.HTTPAddr(), limit)
	get := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(700 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request %d with %d idle connections held: %v, want it not served (deadline exceeded)", limit+1, limit, err)
	}
	held[0].Close()
	poll.Eventually(t, 5*time.Second, func(context.Context) error { return get(time.Second) })
}

func TestAnIdleGRPCConnectionIsClosedAfterTheIdleTimeout(t *testing.T) {
	nd := oneHTTPNode(t, func(l *node.Limits) { l.GRPCMaxConnectionIdle = 300 * time.Millisecond })
	cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := registryv1.NewRegistryClient(cc).ListServices(t.Context(), &registryv1.ListServicesRequest{}); err != nil {
		t.Fatal(err)
	}
	// The server's GOAWAY sends the client's channel to IDLE; left open it
	// would stay READY for the client's own idle timeout (30 minutes).
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if s := cc.GetState(); s != connectivity.Idle {
			return fmt.Errorf("connection is %v", s)
		}
		return nil
	})
}

func TestAnHTTPWatchOutlivesTheReadAndWriteTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	nd := oneHTTPNode(t, func(l *node.Limits) { l.HTTPReadTimeout, l.HTTPWriteTimeout = timeout, timeout })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.HTTPAddr()+"/v1/services/orders/watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() {
		t.Fatalf("no reset: %v", lines.Err())
	}
	// The passing of time is what this test is about: three timeouts.
	<-time.After(3 * timeout)
	cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	in := &registryv1.Instance{Service: "orders", Id: "a", Address: "127.0.0.1:80"}
	if _, err := registryv1.NewRegistryClient(cc).Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() {
		t.Fatalf("the watch ended after %v: %v", 3*timeout, lines.Err())
	}
}

func TestASilentConnectionToGRPCIsClosedAfterTheConnectionTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	nd := oneHTTPNode(t, func(l *node.Limits) { l.GRPCConnectionTimeout = timeout })
	closedWithin(t, dialIdle(t, nd.GRPCAddr(), 1)[0], time.Now(), timeout)
}

func TestGRPCConnectionsBeyondTheLimitAreNotServedUntilOneCloses(t *testing.T) {
	const limit = 5
	c := nodetest.New(t, 1, func(cfg *node.Config) { cfg.Limits.MaxConnections = limit })
	nd := c.Nodes[c.Leader()]
	// limit more connections: whatever the test cluster holds already, the
	// listener is full.
	held := dialIdle(t, nd.GRPCAddr(), limit)
	call := func(timeout time.Duration) error {
		cc, err := grpc.NewClient(nd.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, err = registryv1.NewRegistryClient(cc).ListServices(ctx, &registryv1.ListServicesRequest{}, grpc.WaitForReady(true))
		return err
	}
	if err := call(700 * time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a new connection with the listener full: %v, want it not served (DeadlineExceeded)", err)
	}
	for _, c := range held {
		c.Close()
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error { return call(time.Second) })
}

func TestCallsBeyondTheStreamLimitOfAConnectionWait(t *testing.T) {
	c := nodetest.New(t, 1, func(cfg *node.Config) { cfg.Limits.GRPCMaxConcurrentStreams = 2 })
	reg := c.Registry(c.Leader())
	watch := func(ctx context.Context) error {
		w, err := reg.Watch(ctx, &registryv1.WatchRequest{Service: "orders"})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	first, cancelFirst := context.WithCancel(t.Context())
	defer cancelFirst()
	for range 2 {
		if err := watch(first); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	if err := watch(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third stream on a connection limited to 2: %v, want it to wait (DeadlineExceeded)", err)
	}
	cancelFirst()
	poll.Eventually(t, 5*time.Second, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return watch(ctx)
	})
}

// dialIdle opens n TCP connections to addr that send nothing; the test's
// cleanup closes them.
func dialIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	return held
}

// closedWithin reads conn until the node closes (or resets) it, and fails
// unless that happens within timeout of start, with 2 s of slack.
func closedWithin(t *testing.T, conn net.Conn, start time.Time, timeout time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(conn) // whatever the node answers, then the close
	var ne net.Error
	if elapsed := time.Since(start); errors.As(err, &ne) && ne.Timeout() || elapsed > timeout+2*time.Second {
		t.Fatalf("the connection was still open after %v (read: %v); want it closed soon after %v", elapsed, err, timeout)
	}
}

func TestTheWriteTimeoutCutsASlowResponseButNotAProfile(t *testing.T) {
	const timeout = 300 * time.Millisecond
	c := nodetest.New(t, 1, func(cfg *node.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.EnablePprof = true
		cfg.Limits.HTTPWriteTimeout = timeout
		// A response that takes three write timeouts to finish.
		cfg.DebugHandlers = map[string]http.Handler{"/debug/slow": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for range 3 {
				fmt.Fprintln(w, "part")
				http.NewResponseController(w).Flush()
				select {
				case <-time.After(timeout):
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintln(w, "end")
		})}
	})
	base := "http://" + c.Nodes[c.Leader()].HTTPAddr()
	get := func(path string) (int, string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	if _, body, err := get("/debug/slow"); err == nil && strings.Contains(body, "end") {
		t.Errorf("a response taking 3 write timeouts was written whole: %q", body)
	}
	if code, body, err := get("/debug/pprof/profile?seconds=1"); err != nil || code != http.StatusOK {
		t.Errorf("a 1 s profile with a %v write timeout: %d %.80q %v, want 200", timeout, code, body, err)
	}
}
