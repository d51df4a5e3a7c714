package consulapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc/metadata"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// Supported lists the endpoints this API serves; anything else is a 404
// whose JSON body names them.
var Supported = []string{
	"PUT /v1/agent/service/register",
	"PUT /v1/agent/service/deregister/{service_id}",
	"PUT /v1/agent/check/pass/{check_id}",
	"PUT /v1/agent/check/warn/{check_id}",
	"PUT /v1/agent/check/fail/{check_id}",
	"PUT /v1/agent/check/update/{check_id}",
	"GET /v1/agent/services",
	"GET /v1/agent/service/{service_id}",
	"GET /v1/agent/checks",
	"GET /v1/agent/self",
	"GET /v1/catalog/services",
	"GET /v1/catalog/service/{service}",
	"GET /v1/catalog/datacenters",
	"GET /v1/health/service/{service}",
	"GET /v1/status/leader",
	"GET /v1/status/peers",
}

// maxCached bounds the cache of IDs registered through this node.
const maxCached = 100_000

// Server is the Consul-compatible HTTP API.
type Server struct {
	cfg      Config
	registry registryv1.RegistryClient
	mux      *http.ServeMux

	mu     sync.Mutex
	byID   map[string]ref    // Consul service ID → instance, registered through this node
	checks map[string]string // custom check ID → service ID
}

// ref names one instance.
type ref struct {
	service, id string
	incarnation uint64
}

// New returns the API's handler.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, registry: registryv1.NewRegistryClient(cfg.Conn), mux: http.NewServeMux(),
		byID: map[string]ref{}, checks: map[string]string{}}
	routes := map[string]http.HandlerFunc{
		"PUT /v1/agent/service/register":        s.register,
		"PUT /v1/agent/service/deregister/{id}": s.deregister,
		"PUT /v1/agent/check/pass/{id}":         s.checkPass,
		"PUT /v1/agent/check/warn/{id}":         s.checkNoBeat,
		"PUT /v1/agent/check/fail/{id}":         s.checkNoBeat,
		"PUT /v1/agent/check/update/{id}":       s.checkUpdate,
		"GET /v1/agent/services":                s.agentServices,
		"GET /v1/agent/service/{id}":            s.agentService,
		"GET /v1/agent/checks":                  s.agentChecks,
		"GET /v1/agent/self":                    s.agentSelf,
		"GET /v1/catalog/services":              s.catalogServices,
		"GET /v1/catalog/service/{service}":     s.catalogService,
		"GET /v1/catalog/datacenters":           s.datacenters,
		"GET /v1/health/service/{service}":      s.healthService,
		"GET /v1/status/leader":                 s.statusLeader,
		"GET /v1/status/peers":                  s.statusPeers,
	}
	for pattern, h := range routes {
		method, path, _ := strings.Cut(pattern, " ")
		s.mux.Handle(path, only(method, h))
	}
	s.mux.HandleFunc("/", notSupported)
	return s, nil
}

// ServeHTTP serves the API. A write with an Origin header (a web page's;
// Consul clients send none) is refused: no page may register services.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get("Origin") != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "Permission denied: a write from a web page (Origin %q) is not accepted\n", r.Header.Get("Origin"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// only serves method (GET also HEAD) with h; any other is a 405.
func only(method string, h http.HandlerFunc) http.Handler {
	allow := method
	if method == http.MethodGet {
		allow = "GET, HEAD"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && (method != http.MethodGet || r.Method != http.MethodHead) {
			w.Header().Set("Allow", allow)
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	})
}

// notSupported answers 404 with the endpoints this API has.
func notSupported(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, map[string]any{
		"error":     fmt.Sprintf("%s %s is not part of this registry's Consul-compatible API (no KV, sessions, Connect, intentions, ...)", r.Method, r.URL.Path),
		"supported": Supported,
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// Token is the request's ACL token: X-Consul-Token, else an
// "Authorization: Bearer" header, else ?token=.
func Token(r *http.Request) string {
	if t := r.Header.Get("X-Consul-Token"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return r.URL.Query().Get("token")
}

// callContext is the context of the gRPC calls made for r: the gateway's
// metadata and the caller's token.
func (s *Server) callContext(r *http.Request) context.Context {
	md := s.cfg.CallMetadata(r)
	if t := Token(r); t != "" {
		md = metadata.Join(md, metadata.Pairs("authorization", "Bearer "+t))
	}
	return metadata.NewOutgoingContext(r.Context(), md)
}

// callerIP is the HTTP client's IP address.
func callerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) remember(consulID string, rf ref, customCheck string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[consulID]; ok || len(s.byID) < maxCached {
		s.byID[consulID] = rf
	}
	if customCheck != "" && len(s.checks) < maxCached {
		s.checks[customCheck] = consulID
	}
}

func (s *Server) forget(consulID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, consulID)
	for c, id := range s.checks {
		if id == consulID {
			delete(s.checks, c)
		}
	}
}

func (s *Server) cached(consulID string) (ref, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf, ok := s.byID[consulID]
	return rf, ok
}

// register implements PUT /v1/agent/service/register.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var reg serviceRegistration
	if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
		s.fail(w, bodyError(err))
		return
	}
	in, check, err := toInstance(&reg, callerIP(r))
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := s.callContext(r)
	// The agent keeps one service per ID: a new Name replaces the old.
	if old, ok := s.cached(in.Id); ok && old.service != in.Service {
		if _, err := s.registry.Deregister(ctx, &registryv1.DeregisterRequest{Service: old.service, Id: old.id}); err != nil && !isNotFound(err) {
			s.fail(w, err)
			return
		}
	}
	resp, err := s.registry.Register(ctx, &registryv1.RegisterRequest{Instance: in})
	if err != nil {
		s.fail(w, err)
		return
	}
	custom := ""
	if check != serviceCheckPrefix+in.Id {
		custom = check
	}
	s.remember(in.Id, ref{service: in.Service, id: in.Id, incarnation: resp.GetInstance().GetIncarnation()}, custom)
}

// bodyError is a request body that could not be read or decoded.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return badRequest("request body", "is over the limit of %d bytes", tooBig.Limit)
	}
	return badRequest("request body", "is not a JSON service registration: %v", err)
}

// resolve finds the instance a Consul service ID names: the one this node
// registered or found before, else the first instance with that id the
// token may read (a scan of every service, remembered). A remembered
// instance that is gone is forgotten when a beat finds it unknown.
func (s *Server) resolve(ctx context.Context, consulID string) (ref, error) {
	if rf, ok := s.cached(consulID); ok {
		return rf, nil
	}
	all, _, err := s.instances(ctx, registryv1.Consistency_CONSISTENCY_DEFAULT)
	if err != nil {
		return ref{}, err
	}
	for _, in := range all {
		if in.GetId() == consulID {
			// Remembered: the next pass through this node needs no scan.
			rf := ref{service: in.GetService(), id: in.GetId(), incarnation: in.GetIncarnation()}
			s.remember(consulID, rf, "")
			return rf, nil
		}
	}
	return ref{}, fmt.Errorf("%w: %q", ErrUnknownService, consulID)
}

// resolveCheck finds the instance a check ID names.
func (s *Server) resolveCheck(ctx context.Context, check string) (string, ref, error) {
	s.mu.Lock()
	consulID, custom := s.checks[check]
	s.mu.Unlock()
	if !custom {
		var ok bool
		if consulID, ok = strings.CutPrefix(check, serviceCheckPrefix); !ok {
			all, _, err := s.instances(ctx, registryv1.Consistency_CONSISTENCY_DEFAULT)
			if err != nil {
				return "", ref{}, err
			}
			for _, in := range all {
				if checkID(in) == check {
					return in.GetId(), ref{service: in.GetService(), id: in.GetId(), incarnation: in.GetIncarnation()}, nil
				}
			}
			return "", ref{}, fmt.Errorf("%w: %q", ErrUnknownCheck, check)
		}
	}
	rf, err := s.resolve(ctx, consulID)
	if errors.Is(err, ErrUnknownService) {
		return "", ref{}, fmt.Errorf("%w: %q", ErrUnknownCheck, check)
	}
	return consulID, rf, err
}

// deregister implements PUT /v1/agent/service/deregister/:id.
func (s *Server) deregister(w http.ResponseWriter, r *http.Request) {
	ctx := s.callContext(r)
	consulID := r.PathValue("id")
	rf, err := s.resolve(ctx, consulID)
	if err != nil {
		s.fail(w, err)
		return
	}
	_, err = s.registry.Deregister(ctx, &registryv1.DeregisterRequest{Service: rf.service, Id: rf.id})
	s.forget(consulID)
	if err != nil && isNotFound(err) {
		err = fmt.Errorf("%w: %q", ErrUnknownService, consulID)
	}
	if err != nil {
		s.fail(w, err)
	}
}

// checkPass implements PUT /v1/agent/check/pass/:id: one beat.
func (s *Server) checkPass(w http.ResponseWriter, r *http.Request) {
	if err := s.pass(r, r.PathValue("id")); err != nil {
		s.fail(w, err)
	}
}

// checkNoBeat implements warn and fail: the check id must name an
// instance; nothing is sent (the registry marks what stops beating).
func (s *Server) checkNoBeat(w http.ResponseWriter, r *http.Request) {
	if _, _, err := s.resolveCheck(s.callContext(r), r.PathValue("id")); err != nil {
		s.fail(w, err)
	}
}

// checkUpdate implements PUT /v1/agent/check/update/:id: Status passing
// is a beat, warning and critical send nothing.
func (s *Server) checkUpdate(w http.ResponseWriter, r *http.Request) {
	var u checkUpdate
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
		s.fail(w, bodyError(err))
		return
	}
	switch u.Status {
	case statusPassing:
		if err := s.pass(r, r.PathValue("id")); err != nil {
			s.fail(w, err)
		}
	case statusWarning, statusCritical:
		s.checkNoBeat(w, r)
	default:
		s.fail(w, badRequest("Status", "is %q, it must be passing, warning or critical", u.Status))
	}
}

// pass beats for the instance check names, once more after a fencing
// answer with the incarnation now registered.
func (s *Server) pass(r *http.Request, check string) error {
	ctx := s.callContext(r)
	consulID, rf, err := s.resolveCheck(ctx, check)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		resp, err := s.registry.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: rf.service, Id: rf.id, Incarnation: rf.incarnation}}})
		if err != nil {
			return err
		}
		if len(resp.GetRejected()) == 0 {
			return nil
		}
		rej := resp.GetRejected()[0]
		if rej.GetReason() == registryv1.BeatRejectReason_BEAT_REJECT_REASON_FENCED && attempt == 0 {
			rf.incarnation = rej.GetCurrentIncarnation()
			s.remember(consulID, rf, "")
			continue
		}
		s.forget(consulID)
		return fmt.Errorf("%w: %q (the instance is no longer registered: register it again)", ErrUnknownCheck, check)
	}
}
