package consulapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/validate"
)

// Errors of the adapter itself; errors of the gRPC calls are statuses.
var (
	// ErrUnknownService is a service ID no instance has (Consul: 404
	// "Unknown service ID").
	ErrUnknownService = errors.New("unknown service ID")
	// ErrUnknownCheck is a check ID that names no instance (Consul: 404
	// "Unknown check ID").
	ErrUnknownCheck = errors.New("unknown check ID")
	// ErrUnsupported is a request for a feature outside the subset (a
	// non-TTL check, Connect, another datacenter, a filter): 400.
	ErrUnsupported = errors.New("not supported by this registry's Consul-compatible API")
)

// writeError answers err: the one mapping of errors to HTTP statuses.
// Bodies are plain text, as Consul's are.
//
//	validation errors, InvalidArgument,
//	FailedPrecondition, OutOfRange, ErrUnsupported  400
//	Unauthenticated (no token, unknown token)        403 "ACL not found: ..."
//	PermissionDenied                                 403 "Permission denied: ..."
//	NotFound, ErrUnknownService, ErrUnknownCheck     404
//	AlreadyExists, Aborted                           409
//	ResourceExhausted                                429 with Retry-After
//	Unavailable, Canceled                            503
//	DeadlineExceeded                                 504
//	anything else                                    500 (a fault of ours)
//
// Consul answers 403 for a missing or unknown token ("ACL not found"), and
// its clients expect that, so Unauthenticated is a 403 here, not a 401.
func writeError(w http.ResponseWriter, err error) int {
	code, msg := http.StatusInternalServerError, err.Error()
	switch {
	case errors.Is(err, validate.ErrInvalid), errors.Is(err, ErrUnsupported):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnknownService), errors.Is(err, ErrUnknownCheck):
		code = http.StatusNotFound
	default:
		st, ok := status.FromError(err)
		if !ok {
			break
		}
		msg = st.Message()
		switch st.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
			code = http.StatusBadRequest
		case codes.Unauthenticated:
			code, msg = http.StatusForbidden, "ACL not found: "+msg
		case codes.PermissionDenied:
			code, msg = http.StatusForbidden, "Permission denied: "+msg
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.AlreadyExists, codes.Aborted:
			code = http.StatusConflict
		case codes.ResourceExhausted:
			code = http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(st)))
		case codes.Unavailable, codes.Canceled:
			code = http.StatusServiceUnavailable
		case codes.DeadlineExceeded:
			code = http.StatusGatewayTimeout
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
	return code
}

// fail answers err (writeError) and logs an answer of 500 or more: a
// fault of the registry's, or no leader.
func (s *Server) fail(w http.ResponseWriter, err error) {
	if code := writeError(w, err); code >= http.StatusInternalServerError {
		s.cfg.Logger.Warn("consul api call failed", "status", code, "error", err)
	}
}

// retryAfterSeconds is a status's RetryInfo delay in whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(st *status.Status) int {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return max(int((ri.GetRetryDelay().AsDuration()+time.Second-1)/time.Second), 1)
		}
	}
	return 1
}

// badRequest is a 400 naming the Consul field.
func badRequest(field, format string, args ...any) error {
	return validate.FieldErrorf(field, format, args...)
}
