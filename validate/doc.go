// Package validate holds every input limit of the registry in one place and
// checks API requests against them before anything is proposed to Raft.
//
// A violation is a *FieldError that names the field and the limit and wraps
// ErrInvalid, so that every boundary maps it to one status
// (codes.InvalidArgument, HTTP 400). The package also fills the defaults of
// omitted fields (Normalize*), so that the log only ever holds complete,
// valid commands.
//
// The package has no state and is safe for concurrent use. The client
// library may import it: it depends only on the public API types.
package validate
