package acl

import "errors"

// The package's sentinel errors. Compare with errors.Is.
var (
	// ErrInvalidPolicy is wrapped by every error of Parse.
	ErrInvalidPolicy = errors.New("acl: invalid policy")
)
