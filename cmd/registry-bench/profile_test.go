package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProfilerSavesTheProfileAndRefusesAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" || r.URL.Query().Get("seconds") != "3" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("profile bytes"))
	}))
	defer srv.Close()
	p := &profiler{dir: t.TempDir(), hc: srv.Client()}
	addr := strings.TrimPrefix(srv.URL, "http://")

	path, err := p.fetch(t.Context(), addr, "profile?seconds=3", "cpu.pprof")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "profile bytes" || path != filepath.Join(p.dir, "cpu.pprof") {
		t.Errorf("saved %q in %s (error %v); want the body in %s", got, path, err, filepath.Join(p.dir, "cpu.pprof"))
	}
	if _, err := p.fetch(t.Context(), addr, "heap", "heap.pprof"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 gave error %v; want one that names the status", err)
	}
}

func TestCPUProfileCoversMostOfTheHold(t *testing.T) {
	for _, tt := range []struct{ hold, want time.Duration }{
		{15 * time.Second, 14 * time.Second},
		{30500 * time.Millisecond, 29 * time.Second},
		{time.Second, time.Second},
		{0, time.Second},
	} {
		if got := cpuProfileLength(tt.hold); got != tt.want {
			t.Errorf("hold %v: profile %v, want %v", tt.hold, got, tt.want)
		}
	}
}
