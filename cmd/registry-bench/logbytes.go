package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// errNoLocalNode: the figure needs a node this bench started.
var errNoLocalNode = errors.New("not a local node")

// proposed reads a node's registry_raft_proposed_{entries,bytes}_total from
// its /metrics, summed over the command types: the commands it proposed to
// the Raft log as the leader, and their bytes.
func proposed(ctx context.Context, httpAddr string) (entries, bytes float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL(httpAddr, "/metrics"), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s/metrics: %s", httpAddr, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var into *float64
		switch {
		case strings.HasPrefix(line, "registry_raft_proposed_entries_total{"):
			into = &entries
		case strings.HasPrefix(line, "registry_raft_proposed_bytes_total{"):
			into = &bytes
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s/metrics: %q: %w", httpAddr, line, err)
		}
		*into += v
	}
	return entries, bytes, sc.Err()
}
