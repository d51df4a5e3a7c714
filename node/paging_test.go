package node_test

import (
	"fmt"
	"strings"
	"testing"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/validate"
)

// A service whose instances take more than the 4 MiB a gRPC client (and a
// follower forwarding a read to the leader) receives by default is read
// through a follower in pages of at most validate.MaxPageBytes, and the Go
// client gathers them: before paging, the forwarded read failed with
// RESOURCE_EXHAUSTED ("received message larger than max").
func TestAServiceLargerThanOneMessageIsReadInPagesThroughAForwardingFollower(t *testing.T) {
	c := nodetest.New(t, 3, nil)
	leader := c.Leader()
	follower := (leader + 1) % 3
	const instances = 160 // × ~33 KB of metadata each ≈ 5 MiB
	meta := map[string]string{}
	for k := range validate.MaxMetadataPairs {
		meta[fmt.Sprintf("k%02d", k)] = strings.Repeat("v", validate.MaxMetadataValueLen-16)
	}
	var last uint64
	for i := range instances {
		resp, err := c.Registry(leader).Register(t.Context(), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "big", Id: fmt.Sprintf("i%03d", i), Address: fmt.Sprintf("127.0.0.1:%d", 1000+i), Metadata: meta,
		}})
		if err != nil {
			t.Fatalf("Register i%03d: %v", i, err)
		}
		last = resp.Index
	}

	// DEFAULT through the follower: forwarded to the leader, answered in pages.
	req := &registryv1.GetServiceRequest{Service: "big", Consistency: registryv1.Consistency_CONSISTENCY_DEFAULT}
	var ids []string
	pages := 0
	for {
		resp, err := c.Registry(follower).GetService(t.Context(), req)
		if err != nil {
			t.Fatalf("GetService page %d through the follower: %v", pages+1, err)
		}
		pages++
		if resp.Index < last {
			t.Errorf("page %d answered at index %d, before the last registration's %d", pages, resp.Index, last)
		}
		for _, in := range resp.Instances {
			ids = append(ids, in.Id)
		}
		if resp.NextPageToken == "" {
			break
		}
		if pages > instances {
			t.Fatal("the pages never end")
		}
		req.PageToken = resp.NextPageToken
	}
	if pages < 2 {
		t.Errorf("%d page(s) for ~5 MiB of instances, want at least 2", pages)
	}
	if len(ids) != instances {
		t.Fatalf("%d instances over %d pages, want %d", len(ids), pages, instances)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("i%03d", i); id != want {
			t.Fatalf("instance %d is %s, want %s (sorted by id, none twice, none missing)", i, id, want)
		}
	}

	// The Go client's direct discovery gathers the pages; its watched
	// cache gets them as a reset in several messages.
	cl, err := client.New(client.Config{Endpoints: []string{c.Nodes[follower].GRPCAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for name, opts := range map[string][]client.DiscoverOption{
		"through the leader": {client.WithConsistency(client.Leader)},
		"cached":             nil,
	} {
		got, err := cl.Discover(t.Context(), "big", opts...)
		if err != nil {
			t.Fatalf("client Discover %s: %v", name, err)
		}
		if len(got) != instances {
			t.Errorf("client Discover %s: %d instances, want %d", name, len(got), instances)
		}
	}
}

// page_size bounds a page by count; a page token that no response gave is
// refused naming the field, and so is a page_size above the limit.
func TestGetServicePageSizeAndTokenAreChecked(t *testing.T) {
	c := nodetest.New(t, 1, nil)
	reg := c.Registry(c.Leader())
	for i := range 5 {
		if _, err := reg.Register(t.Context(), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "small", Id: fmt.Sprintf("s%d", i), Address: "127.0.0.1:80",
		}}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	req := &registryv1.GetServiceRequest{Service: "small", PageSize: 2}
	for range 5 {
		resp, err := reg.GetService(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Instances) > 2 {
			t.Errorf("page of %d with page_size 2", len(resp.Instances))
		}
		for _, in := range resp.Instances {
			ids = append(ids, in.Id)
		}
		if resp.NextPageToken == "" {
			break
		}
		req.PageToken = resp.NextPageToken
	}
	if got := strings.Join(ids, ","); got != "s0,s1,s2,s3,s4" {
		t.Errorf("pages of 2 gave %s, want s0,s1,s2,s3,s4", got)
	}
	for name, bad := range map[string]*registryv1.GetServiceRequest{
		"page_token": {Service: "small", PageToken: "!!not base64!!"},
		"page_size":  {Service: "small", PageSize: validate.MaxPageSize + 1},
	} {
		_, err := reg.GetService(t.Context(), bad)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bad %s: %v, want InvalidArgument naming %s", name, err, name)
		}
	}
}
