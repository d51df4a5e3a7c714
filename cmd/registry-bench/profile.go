package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// profiler fetches Go profiles from a node started with --enable-pprof
// (registry-bench --profile DIR).
type profiler struct {
	dir string
	hc  *http.Client
}

// fetch GETs http://httpAddr/debug/pprof/<what> into dir/name and returns
// the path. The CPU profile's request lasts as long as the profile.
func (p *profiler) fetch(ctx context.Context, httpAddr, what, name string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL(httpAddr, "/debug/pprof/"+what), nil)
	if err != nil {
		return "", err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("GET /debug/pprof/%s: %s: %s", what, resp.Status, b)
	}
	path := filepath.Join(p.dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// cpuProfileLength is how long the CPU profile of a hold runs: most of
// it, ending a second before the hold does, so that the profile is in
// before the figures are taken.
func cpuProfileLength(hold time.Duration) time.Duration {
	return max(time.Second, (hold - time.Second).Truncate(time.Second))
}
