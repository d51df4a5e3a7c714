package consulapi

// The JSON shapes of Consul's HTTP API that this subset reads and writes:
// the fields of github.com/hashicorp/consul/api's structs of the same names
// that the registry can fill. Consul's JSON decoder, like encoding/json,
// matches field names case-insensitively and ignores unknown fields.

// serviceRegistration is the body of PUT /v1/agent/service/register
// (api.AgentServiceRegistration).
type serviceRegistration struct {
	Kind    string
	ID      string
	Name    string
	Tags    []string
	Port    int
	Address string
	Meta    map[string]string
	Check   *serviceCheck
	Checks  []*serviceCheck
	Proxy   any
	Connect any
}

// serviceCheck is api.AgentServiceCheck: only TTL checks are supported.
type serviceCheck struct {
	CheckID                        string
	Name                           string
	TTL                            string
	ScriptArgs                     []string
	HTTP, TCP, UDP, GRPC, H2PING   string
	DockerContainerID              string
	AliasNode, AliasService        string
	Status                         string
	DeregisterCriticalServiceAfter string
}

// checkUpdate is the body of PUT /v1/agent/check/update/:check_id.
type checkUpdate struct {
	Status string
	Output string
}

// weights is api.AgentWeights.
type weights struct {
	Passing int
	Warning int
}

// agentService is api.AgentService.
type agentService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]any `json:",omitempty"`
	Weights           weights
	EnableTagOverride bool
	CreateIndex       uint64
	ModifyIndex       uint64
	Datacenter        string
}

// healthCheck is api.HealthCheck (and api.AgentCheck, a subset).
type healthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	CreateIndex uint64
	ModifyIndex uint64
}

// catalogNode is api.Node.
type catalogNode struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
}

// serviceEntry is api.ServiceEntry, one element of GET /v1/health/service.
type serviceEntry struct {
	Node    catalogNode
	Service agentService
	Checks  []healthCheck
}

// catalogService is api.CatalogService, one element of GET
// /v1/catalog/service.
type catalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           weights
	ServiceEnableTagOverride bool
	CreateIndex              uint64
	ModifyIndex              uint64
}
