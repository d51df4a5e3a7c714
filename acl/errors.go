package acl

import "errors"

// The package's sentinel errors. Compare with errors.Is.
var (
	// ErrInvalidPolicy is wrapped by every error of Parse.
	ErrInvalidPolicy = errors.New("acl: invalid policy")
	// ErrPermissionDenied is wrapped by *PermissionDeniedError, which
	// Decision.Err returns on a deny.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidBearer is wrapped by every error of ParseBearer. Its
	// messages never quote the header value.
	ErrInvalidBearer = errors.New("acl: invalid authorization header")
)

// PermissionDeniedError names the permission a denied request needed, for a
// PermissionDenied status.
type PermissionDeniedError struct {
	Needed Permission
}

func (e *PermissionDeniedError) Error() string {
	return "permission denied: needs " + e.Needed.String()
}

// Unwrap makes errors.Is(err, ErrPermissionDenied) hold.
func (e *PermissionDeniedError) Unwrap() error { return ErrPermissionDenied }
