package consulapi

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/validate"
)

// Metadata keys the API keeps its own fields in. Every key starting with
// ReservedPrefix is the API's: a registration's Meta may not use one, and
// Meta given back leaves them out.
const (
	ReservedPrefix = "consul."
	// MetaTags holds a registration's Tags, comma-joined.
	MetaTags = "consul.tags"
	// MetaCheckID holds a TTL check's CheckID when it is not the default
	// "service:<ID>".
	MetaCheckID = "consul.check_id"
)

// Check statuses, as Consul writes them.
const (
	statusPassing  = "passing"
	statusWarning  = "warning"
	statusCritical = "critical"
)

// serviceCheckPrefix starts the default check id of a service: "service:<ID>".
const serviceCheckPrefix = "service:"

// Timing is a registration's beat timing, derived from its TTL check.
type Timing struct {
	BeatInterval, SuspectAfter, TTL time.Duration
}

// DeriveTiming turns a Consul TTL check (ttl T, DeregisterCriticalServiceAfter
// d, zero if unset) into the registry's timing: beat interval T/3, suspect
// after 2T/3 (Consul "warning": a pass is late), removal after T + d. The
// check is "critical" from T (no pass for a whole TTL) until the removal,
// which the registry always does: a check without d is removed at T.
// T must give a beat interval of at least validate.MinBeatInterval, and
// T + d may not pass validate.MaxTTL.
func DeriveTiming(ttl, deregisterAfter time.Duration) (Timing, error) {
	switch {
	case ttl/3 < validate.MinBeatInterval:
		return Timing{}, badRequest("Check.TTL", "is %v, the minimum is %v (the beat interval is a third of it)", ttl, 3*validate.MinBeatInterval)
	case deregisterAfter < 0:
		return Timing{}, badRequest("Check.DeregisterCriticalServiceAfter", "is negative (%v)", deregisterAfter)
	case ttl+deregisterAfter > validate.MaxTTL:
		return Timing{}, badRequest("Check.DeregisterCriticalServiceAfter", "with Check.TTL is %v, the maximum is %v", ttl+deregisterAfter, validate.MaxTTL)
	}
	return Timing{BeatInterval: ttl / 3, SuspectAfter: 2 * ttl / 3, TTL: ttl + deregisterAfter}, nil
}

// toInstance maps a registration to the instance to register; callerIP is
// the address an empty Address takes.
func toInstance(reg *serviceRegistration, callerIP string) (*registryv1.Instance, string, error) {
	switch {
	case reg.Kind != "" || reg.Proxy != nil || reg.Connect != nil:
		return nil, "", fmt.Errorf("service mesh fields (Kind, Proxy, Connect): %w", ErrUnsupported)
	}
	if err := validate.Name("Name", reg.Name); err != nil {
		return nil, "", err
	}
	id := reg.ID
	if id == "" {
		id = reg.Name
	}
	if err := validate.Name("ID", id); err != nil {
		return nil, "", err
	}
	if reg.Port < 1 || reg.Port > 65535 {
		return nil, "", badRequest("Port", "is %d, it must be 1-65535", reg.Port)
	}
	host := reg.Address
	if host == "" {
		host = callerIP
	}
	addr := net.JoinHostPort(host, strconv.Itoa(reg.Port))
	if err := validate.Address("Address", addr); err != nil {
		return nil, "", err
	}
	md := make(map[string]string, len(reg.Meta)+2)
	for k, v := range reg.Meta {
		if strings.HasPrefix(k, ReservedPrefix) {
			return nil, "", badRequest("Meta", "key %q starts with %q, which this API reserves", k, ReservedPrefix)
		}
		md[k] = v
	}
	for i, tag := range reg.Tags {
		if tag == "" || strings.Contains(tag, ",") {
			return nil, "", badRequest(fmt.Sprintf("Tags[%d]", i), "%q: a tag must be non-empty and have no comma", tag)
		}
	}
	if len(reg.Tags) > 0 {
		md[MetaTags] = strings.Join(reg.Tags, ",")
	}
	in := &registryv1.Instance{Service: reg.Name, Id: id, Address: addr, Metadata: md}

	checks := slices.DeleteFunc(append([]*serviceCheck{reg.Check}, reg.Checks...), func(c *serviceCheck) bool { return c == nil })
	if len(checks) > 1 {
		return nil, "", badRequest("Checks", "has %d checks, this API supports one TTL check", len(checks))
	}
	checkID := serviceCheckPrefix + id
	if len(checks) == 1 {
		c := checks[0]
		if len(c.ScriptArgs) > 0 || c.HTTP != "" || c.TCP != "" || c.UDP != "" || c.GRPC != "" || c.H2PING != "" ||
			c.DockerContainerID != "" || c.AliasNode != "" || c.AliasService != "" || c.TTL == "" {
			return nil, "", fmt.Errorf("field Check: only TTL checks (a TTL and no script, HTTP, TCP, UDP, gRPC, H2 ping, Docker or alias): %w", ErrUnsupported)
		}
		ttl, err := time.ParseDuration(c.TTL)
		if err != nil {
			return nil, "", badRequest("Check.TTL", "%q is not a duration (e.g. \"10s\")", c.TTL)
		}
		var dereg time.Duration
		if c.DeregisterCriticalServiceAfter != "" {
			if dereg, err = time.ParseDuration(c.DeregisterCriticalServiceAfter); err != nil {
				return nil, "", badRequest("Check.DeregisterCriticalServiceAfter", "%q is not a duration (e.g. \"1m\")", c.DeregisterCriticalServiceAfter)
			}
		}
		t, err := DeriveTiming(ttl, dereg)
		if err != nil {
			return nil, "", err
		}
		in.BeatInterval, in.SuspectAfter, in.Ttl = durationpb.New(t.BeatInterval), durationpb.New(t.SuspectAfter), durationpb.New(t.TTL)
		if c.CheckID != "" && c.CheckID != checkID {
			checkID = c.CheckID
			md[MetaCheckID] = checkID
		}
	}
	if err := validate.Metadata("Meta", md); err != nil {
		return nil, "", err
	}
	return in, checkID, nil
}

// checkStatus is an instance's check status at now: HEALTHY is passing,
// SUSPECT warning, and SUSPECT with no beat for three beat intervals (a
// Consul registration's check TTL) critical.
func checkStatus(in *registryv1.Instance, now time.Time) string {
	if in.GetState() == registryv1.InstanceState_INSTANCE_STATE_HEALTHY {
		return statusPassing
	}
	if last := in.GetLastBeatAt(); last != nil && now.Sub(last.AsTime()) >= 3*in.GetBeatInterval().AsDuration() {
		return statusCritical
	}
	return statusWarning
}

// hostPort splits an instance address; an address validate accepted
// always splits.
func hostPort(in *registryv1.Instance) (string, int) {
	host, port, err := net.SplitHostPort(in.GetAddress())
	if err != nil {
		return in.GetAddress(), 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// tags are an instance's Consul tags.
func tags(in *registryv1.Instance) []string {
	v := in.GetMetadata()[MetaTags]
	if v == "" {
		return []string{}
	}
	return strings.Split(v, ",")
}

// userMeta is an instance's metadata without the API's reserved keys.
func userMeta(in *registryv1.Instance) map[string]string {
	md := maps.Clone(in.GetMetadata())
	if md == nil {
		md = map[string]string{}
	}
	maps.DeleteFunc(md, func(k, _ string) bool { return strings.HasPrefix(k, ReservedPrefix) })
	return md
}

// checkID is an instance's check id.
func checkID(in *registryv1.Instance) string {
	if id := in.GetMetadata()[MetaCheckID]; id != "" {
		return id
	}
	return serviceCheckPrefix + in.GetId()
}

// hasTags reports whether in has every tag of want.
func hasTags(in *registryv1.Instance, want []string) bool {
	have := tags(in)
	for _, t := range want {
		if !slices.Contains(have, t) {
			return false
		}
	}
	return true
}

// view renders instances in Consul's shapes for one answering node.
type view struct {
	node, dc string
	now      time.Time
}

func (v view) agentService(in *registryv1.Instance) agentService {
	host, port := hostPort(in)
	return agentService{
		ID: in.GetId(), Service: in.GetService(), Tags: tags(in), Meta: userMeta(in),
		Port: port, Address: host, Weights: weights{Passing: 1, Warning: 1},
		CreateIndex: in.GetCreateIndex(), ModifyIndex: in.GetModifyIndex(), Datacenter: v.dc,
	}
}

func (v view) check(in *registryv1.Instance) healthCheck {
	st := checkStatus(in, v.now)
	out := ""
	if st != statusPassing {
		if last := in.GetLastBeatAt(); last != nil {
			out = fmt.Sprintf("no pass for %v", v.now.Sub(last.AsTime()).Round(time.Millisecond))
		}
	}
	return healthCheck{
		Node: v.node, CheckID: checkID(in), Name: fmt.Sprintf("Service '%s' check", in.GetService()),
		Status: st, Output: out, ServiceID: in.GetId(), ServiceName: in.GetService(), ServiceTags: tags(in),
		Type: "ttl", CreateIndex: in.GetCreateIndex(), ModifyIndex: in.GetModifyIndex(),
	}
}

func (v view) catalogNode(in *registryv1.Instance) catalogNode {
	host, _ := hostPort(in)
	return catalogNode{Node: v.node, Address: host, Datacenter: v.dc, TaggedAddresses: map[string]string{}, Meta: map[string]string{},
		CreateIndex: in.GetCreateIndex(), ModifyIndex: in.GetModifyIndex()}
}

func (v view) serviceEntry(in *registryv1.Instance) serviceEntry {
	return serviceEntry{Node: v.catalogNode(in), Service: v.agentService(in), Checks: []healthCheck{v.check(in)}}
}

func (v view) catalogService(in *registryv1.Instance) catalogService {
	host, port := hostPort(in)
	return catalogService{
		Node: v.node, Address: host, Datacenter: v.dc, TaggedAddresses: map[string]string{}, NodeMeta: map[string]string{},
		ServiceID: in.GetId(), ServiceName: in.GetService(), ServiceAddress: host, ServiceTags: tags(in),
		ServiceMeta: userMeta(in), ServicePort: port, ServiceWeights: weights{Passing: 1, Warning: 1},
		CreateIndex: in.GetCreateIndex(), ModifyIndex: in.GetModifyIndex(),
	}
}
