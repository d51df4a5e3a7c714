package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

func TestHealthExitsZeroOnlyWhenTheNodeIsReady(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			w.Write([]byte("ok\n"))
		case r.URL.Path == "/readyz" && ready:
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "not ready: no leader is known", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name  string
		ready bool
		env   string
		args  []string
		code  int
		says  string
	}{
		{"ready", true, "", []string{"--http-addr", addr}, exitOK, ""},
		{"not ready", false, "", []string{"--http-addr", addr}, exitFailure, "503 Service Unavailable: not ready: no leader is known"},
		{"an unspecified host means loopback", true, "", []string{"--http-addr", "0.0.0.0:" + port}, exitOK, ""},
		{"address from the environment", true, addr, nil, exitOK, ""},
		{"any URL", false, "", []string{"--url", "http://" + addr + "/healthz"}, exitOK, ""},
		{"unreachable", true, "", []string{"--http-addr", closedAddr}, exitFailure, "connection refused"},
		{"bad address", true, "", []string{"--http-addr", "nonsense"}, exitUsage, "--http-addr"},
		{"stray argument", true, "", []string{"now"}, exitUsage, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			if tt.env != "" {
				t.Setenv("REGISTRY_HTTP_ADDR", tt.env)
			}
			var out bytes.Buffer
			code := run(append([]string{"health"}, tt.args...), &out)
			if code != tt.code || !strings.Contains(out.String(), tt.says) || (tt.says == "") != (out.Len() == 0) {
				t.Errorf("exit %d, output %q; want %d saying %q", code, out.String(), tt.code, tt.says)
			}
		})
	}
}

func TestHealthHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"health", "--help"}, &out); code != exitOK || !strings.Contains(out.String(), "-url") {
		t.Errorf("health --help: exit %d\n%s", code, out.String())
	}
}

func TestHealthSpeaksTLSWithTheNodesFiles(t *testing.T) {
	ca := tlstest.CA(t)
	files := tlstest.WriteFiles(t, t.TempDir(), ca, tlstest.Cert(t, ca, true))
	src, err := tlsutil.NewSource(files, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}))
	srv.TLS = src.ServerConfig("http/1.1")
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	withTLS := []string{"--http-addr", addr, "--tls-ca", files.CAFile, "--tls-cert", files.CertFile, "--tls-key", files.KeyFile}
	var out bytes.Buffer
	if code := health(withTLS, &out); code != exitOK {
		t.Errorf("with the node's files: exit %d, want 0: %s", code, out.String())
	}
	out.Reset()
	if code := health([]string{"--http-addr", addr, "--tls-ca", files.CAFile}, &out); code != exitFailure {
		t.Errorf("without a client certificate: exit %d, want 1: %s", code, out.String())
	}
}
